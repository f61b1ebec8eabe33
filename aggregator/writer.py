"""The store process's writer thread: batches into InfluxDB, or into the spool while it cannot take them.

A batch's chunks are reported ``Stored`` (and so acknowledged to the broker) only once its points
are durable somewhere: written to InfluxDB, or fsynced into the spool after ``spool_after_s`` of
failures. Spooled batches go to InfluxDB first when it is back, oldest first, so the order holds.
A point InfluxDB will never take is found by halving the batch and set aside alone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from aggregator.config import InfluxConfig
from aggregator.handover import Reply, Stored
from aggregator.influx import Database, DatabaseError, PointsRefusedError, RefusedError, UnavailableError
from aggregator.spool import Spool

log = logging.getLogger(__name__)


@dataclass
class Batch:
    lines: list[str] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)  # stored once these lines are
    messages: int = 0
    latest: Optional[datetime] = None  # end of the newest count window in it


@dataclass
class Counters:
    processed: int = 0
    stored: int = 0
    rejected: int = 0
    deduplicated: int = 0
    lag_s: Optional[float] = None
    database: str = "ok"


class Writer:
    def __init__(
        self, db: Database, spool: Spool, config: InfluxConfig, counters: Counters, reply: Callable[[Reply], None]
    ) -> None:
        self.db, self.spool, self.config, self.counters, self.reply = db, spool, config, counters, reply
        self._batches: queue.Queue[Optional[Batch]] = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self._last_error = ""

    def start(self) -> None:
        self._thread.start()

    def put(self, batch: Batch) -> None:
        """Hand a batch over; blocks while the writer is behind (and so the intake waits)."""
        self._batches.put(batch)

    def finish(self) -> None:
        """Write what was handed over, then stop."""
        self._batches.put(None)
        self._thread.join()

    def drain_spool(self, until_empty: bool = False) -> None:
        """Write spooled batches, oldest first, until one fails (or, ``until_empty``, raise DatabaseError)."""
        while True:
            batch = self.spool.oldest()
            if batch is None:
                return
            try:
                self._write(batch.lines)
            except (RefusedError, UnavailableError) as exc:
                self._failed("refused" if isinstance(exc, RefusedError) else "unreachable", exc)
                if until_empty:
                    raise
                return
            self.spool.remove(batch)
            self._ok()
            if not self.spool.points:
                log.info("spool drained: every kept point is in InfluxDB")

    def _loop(self) -> None:
        while True:
            try:
                batch = self._batches.get(timeout=1.0)
            except queue.Empty:
                if self.spool.points:
                    self.drain_spool()
                continue
            if batch is None:
                if self.spool.points:
                    self.drain_spool()
                return
            if batch.lines:
                self._store(batch.lines)
            if batch.chunks:
                self.reply(Stored(batch.chunks))
            self.counters.stored += batch.messages
            if batch.latest is not None:
                self.counters.lag_s = max(0.0, (datetime.now(timezone.utc) - batch.latest).total_seconds())

    def _store(self, lines: list[str]) -> None:
        """Into the database, or into the spool; returns only when the points are durable somewhere."""
        if self.spool.points:  # older points wait there: keep the order
            self.drain_spool()
        if not self.spool.points:
            deadline = time.monotonic() + self.config.spool_after_s
            delay = 0.2
            while True:
                try:
                    self._write(lines)
                    self._ok()
                    return
                except RefusedError as exc:
                    self._failed("refused", exc)
                    break
                except UnavailableError as exc:
                    self._failed("unreachable", exc)
                    if time.monotonic() + delay > deadline:
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        self.spool.put(lines)

    def _write(self, lines: list[str]) -> None:
        """Into the database; points it will never take are found by halving and set aside one by one,
        while the rest of the batch is stored (writing a point twice changes nothing)."""
        try:
            self.db.write(lines)
        except PointsRefusedError as exc:
            if len(lines) == 1:
                self._set_aside(lines, exc)
                return
            half = len(lines) // 2
            self._write(lines[:half])
            self._write(lines[half:])

    def _set_aside(self, lines: list[str], exc: DatabaseError) -> None:
        log.error("%s; the point is kept in %s (table refused): %s", exc, self.spool.path, lines[0][:300])
        self.spool.keep_refused(lines, str(exc))

    def _ok(self) -> None:
        if self.counters.database != "ok":
            log.info("InfluxDB is back")
        self.counters.database = "ok"
        self._last_error = ""

    def _failed(self, state: str, exc: DatabaseError) -> None:
        self.counters.database = state
        if str(exc) != self._last_error:  # once per distinct error, not once per retry
            log.error("%s; spooling to %s meanwhile", exc, self.spool.path)
            self._last_error = str(exc)
