"""The aggregator's store process: validate, deduplicate, roll up, write to InfluxDB or the spool.

It runs beside the MQTT intake (``aggregator.service``) as a process of its own, because Python runs
one thread at a time: paho's receive loop alone keeps a core busy at full rate, and validation and
writing would otherwise queue behind it. The intake hands over chunks of raw messages; this process
answers with the ids of the chunks whose data is durably stored, and only then does the intake
acknowledge them to the broker.

Inside, the reader thread turns messages into points and updates the roll-up; every ``batch_size``
points or ``flush_interval_s`` a batch is cut (only between chunks) and handed to the writer thread,
which writes it to InfluxDB, or after ``spool_after_s`` of failures to the local spool (fsynced),
and then reports its chunks as stored. A crash anywhere before that leaves the messages
unacknowledged: the broker redelivers them, and writing them again is harmless (a window's point is
keyed by its device, line and time; the roll-up moves lines to cumulative totals).

Every device is untrusted: a message that breaks the contract, or a window whose totals cannot be true
(``aggregator.rollup``), is not stored but dead-lettered with the reason, and the technicians get a
``bad_data`` fault for its device. Whatever one message holds, it cannot stop this process: a failure
while handling it is a dead letter too. A point the database refuses is set aside alone, not with its batch.

Its rooms: ``handover`` (what the two processes say), ``dedup``, ``devices`` (who can be counted on,
fault notices), ``zonewatch`` (levels, warnings and notices on the data's clock) and ``writer``
(InfluxDB, spool). This module joins them: it takes chunks, cuts batches, and reports health.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from multiprocessing.connection import Connection
from typing import Callable, Optional

from aggregator import points
from aggregator.config import AggregatorConfig
from aggregator.dedup import Dedup
from aggregator.devices import DeviceHealth
from aggregator.handover import Chunk, Publish, Ready, Reply
from aggregator.influx import Database, DatabaseError, rows
from aggregator.rollup import LineState, RollUp
from aggregator.spool import Spool
from aggregator.validation import InvalidMessageError, Validator
from aggregator.writer import Batch, Counters, Writer
from aggregator.zonewatch import ZoneWatch
from lanewatch import contract
from lanewatch.site.model import Site

log = logging.getLogger(__name__)


class Store:
    def __init__(self, site: Site, config: AggregatorConfig, reply: Callable[[Reply], None]) -> None:
        self.site_id = site.site.id
        self.config = config
        self.reply = reply
        self.validator = Validator(site, config.validation)
        self.store = "store" in config.roles
        self.db = Database(config.influxdb)
        self.spool = Spool(config.state_dir / "spool.db")
        self.dedup = Dedup()
        self.counters = Counters()
        self.writer = Writer(self.db, self.spool, config.influxdb, self.counters, reply)
        self.health = DeviceHealth(site, config.levels.device_timeout_s)
        self.started = datetime.now(timezone.utc)
        self.zones_of = {e.id: e.zone or "" for e in site.entrances}
        self.status_topic = contract.KINDS["status"].template.format(site=self.site_id, instance=config.instance)
        self.deadletter_topic = contract.KINDS["deadletter"].template.format(
            site=self.site_id, instance=config.instance
        )
        self.rollup = RollUp(site, config.validation, drift=config.drift) if "rollup" in config.roles else None
        self.watch = (
            ZoneWatch(site, config, self.rollup, self.health, self.validator.clocks.off, reply)
            if self.rollup is not None
            else None
        )
        self._open = Batch()

    # --- life cycle ------------------------------------------------------------------------------

    def prepare(self, wait: Callable[[float], bool]) -> bool:
        """Wait for the database, write what the spool kept, and rebuild the roll-up from stored state.

        ``wait(seconds)`` pauses between attempts and returns True when the aggregator is stopping.
        """
        delay = 1.0
        while True:
            try:
                self.db.prepare()
                self.writer.drain_spool(until_empty=True)
                if self.rollup is not None:
                    self._restore()
                self.writer.start()
                return True
            except DatabaseError as exc:
                log.warning("waiting for InfluxDB (%s); messages wait on the broker meanwhile", exc)
                if wait(delay):
                    return False
                delay = min(delay * 2, 30.0)

    def serve(self, receive: Callable[[float], Optional[Chunk]], stop: threading.Event) -> None:
        """Take chunks until the intake sends None; cut batches on size and time; report health."""
        interval = self.config.influxdb.flush_interval_s
        next_cut = time.monotonic() + interval
        next_status = time.monotonic()
        while True:
            chunk = receive(max(0.0, next_cut - time.monotonic()))
            urgent = False
            if chunk is not None:
                self.take(chunk)
                if self.watch is not None:
                    self.watch.last_chunk = time.monotonic()
                    urgent = self.watch.urgent()
            now = time.monotonic()
            if now >= next_status:
                self._report()
                next_status = now + self.config.status_s
            if urgent or now >= next_cut or len(self._open.lines) >= self.config.influxdb.batch_size:
                self.cut()
                next_cut = now + interval
            if stop.is_set():
                break
        self._report()
        self.cut()
        self.writer.finish()
        self.spool.close()
        self.db.close()
        c = self.counters
        log.info("stopped: processed %d, stored %d, rejected %d, deduplicated %d, spooled %d",
                 c.processed, c.stored, c.rejected, c.deduplicated, self.spool.points)  # fmt: skip

    def _restore(self) -> None:
        assert self.rollup is not None
        site = self.site_id
        lines: dict[tuple[str, str], LineState] = {}
        day: dict[tuple[str, str], tuple[int, int]] = {}
        for series in self.db.query(
            f"SELECT * FROM line_state WHERE site = '{site}' GROUP BY device, line ORDER BY time DESC LIMIT 1"
        ):
            for row in rows(series):
                key = (series["tags"]["device"], series["tags"]["line"])
                when = points.EPOCH + timedelta(microseconds=row["time"] // 1000)
                lines[key] = LineState(row["boot_id"], when, row["total_in"], row["total_out"], row["net"])
                day[key] = (row.get("day_in") or 0, row.get("day_out") or 0)
        for series in self.db.query(f"SELECT last(state) FROM factor_state WHERE site = '{site}'"):
            for row in rows(series):
                try:
                    self.rollup.factors.loads(row["last"])
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    log.warning("the stored counting factors cannot be read (%s): starting from the prior", exc)
        occupancy: dict[str, tuple[int, Optional[int], datetime]] = {}
        bands: dict[str, tuple[int, int]] = {}
        for series in self.db.query(
            f"SELECT occupancy, uncorrected, band, crossed, flow, flow_band FROM zones WHERE site = '{site}' "
            "GROUP BY zone ORDER BY time DESC LIMIT 1"
        ):
            for row in rows(series):
                when = points.EPOCH + timedelta(microseconds=row["time"] // 1000)
                # the counted occupancy (before the views) is the state; older points have only the one in use
                counted = row["occupancy"] if row.get("flow") is None else row["flow"]
                occupancy[series["tags"]["zone"]] = (counted, row.get("uncorrected"), when)
                band = row.get("band") if row.get("flow_band") is None else row["flow_band"]
                bands[series["tags"]["zone"]] = (band or 0, row.get("crossed") or 0)
        self.rollup.restore(lines, occupancy, day, bands)
        if lines:
            log.info("roll-up restored: %d counting lines, %d zones", len(lines), len(occupancy))
        forecast = self.watch.forecast if self.watch is not None else None
        if forecast is not None:  # the usual daily curve, from the last week's stored occupancy
            for series in self.db.query(
                f"SELECT last(occupancy) FROM zones WHERE site = '{site}' AND time > now() - 8d "
                "GROUP BY time(5m), zone fill(none)"
            ):
                for row in rows(series):
                    when = points.EPOCH + timedelta(microseconds=row["time"] // 1000)
                    forecast.learn(series["tags"]["zone"], when, row["last"])

    # --- the reader thread -----------------------------------------------------------------------

    def take(self, chunk: Chunk) -> None:
        now = datetime.now(timezone.utc)
        batch = self._open
        for topic, payload, live in chunk.messages():
            self.counters.processed += 1
            try:
                self._take_one(topic, payload, live, now, batch)
            except InvalidMessageError as exc:
                self._reject(topic, payload, str(exc), now)
            except Exception as exc:  # whatever a message holds, it must not stop the aggregator
                log.exception("failed to handle a message on %s", topic[:200])
                self._reject(topic, payload, f"the aggregator failed on it ({type(exc).__name__}: {exc})", now)
        batch.chunks.append(chunk.id)
        batch.messages += len(chunk)

    def _take_one(self, topic: str, payload: bytes, live: bool, now: datetime, batch: Batch) -> None:
        """Validate, deduplicate, roll up and store one message; InvalidMessageError when it must not count."""
        if "/headcounts/" in topic:
            count = self.validator.check_headcount(topic, payload, now)
            if self.watch is not None:
                log.info("headcount: %s", self.watch.rollup.anchor(count))
            return
        accepted = self.validator.check(topic, payload, now, live)
        body = accepted.message
        entrance = accepted.entrance.id
        self.health.saw(body)
        if isinstance(body, contract.CountWindow):
            if self.dedup.seen(body.device, body.boot_id, body.seq):
                self.counters.deduplicated += 1
                return
            if self.watch is not None:  # the roll-up role
                self.watch.before_window(body.window_end, batch.lines)
                self.watch.rollup.apply(body, entrance)  # ImplausibleTotalsError: nothing applied, nothing stored
                self.watch.after_window(body.window_end)
            if self.store:
                batch.lines.append(points.count(body, entrance, self.zones_of[entrance]))
            if batch.latest is None or body.window_end > batch.latest:
                batch.latest = body.window_end
        elif self.store and isinstance(body, contract.Heartbeat):
            batch.lines.append(points.heartbeat(body, entrance))
        elif self.store and isinstance(body, contract.Availability):
            batch.lines.append(points.availability(body, entrance, now))

    def _reject(self, topic: str, payload: bytes, reason: str, now: datetime) -> None:
        self.counters.rejected += 1
        log.warning("rejected %s: %s", topic[:200], reason)
        parts = topic.split("/")
        if len(parts) > 4 and parts[2] == self.site_id and parts[3] == "devices":
            self.health.rejected(parts[4], reason)  # the ACL lets a device write only there
        letter = contract.DeadLetter(
            site=self.site_id,
            time=now,
            instance=self.config.instance,
            topic=topic[:1024],
            reason=reason[: contract.MAX_TEXT],
            payload_b64=base64.b64encode(payload[: 12 * 1024]).decode("ascii"),
            payload_bytes=min(len(payload), contract.MAX_MQTT_PAYLOAD),
        )
        self.reply(Publish(self.deadletter_topic, contract.encode(letter), False))

    def cut(self) -> None:
        """Hand the open batch to the writer; blocks while the writer is behind (the intake then waits)."""
        if self.watch is not None:
            self.watch.at_cut(self._open.lines)
        batch = self._open
        if not batch.lines and not batch.chunks:
            return
        self._open = Batch()
        self.writer.put(batch)

    # --- health ----------------------------------------------------------------------------------

    def status(self) -> contract.AggregatorStatus:
        c = self.counters
        return contract.AggregatorStatus(
            site=self.site_id,
            instance=self.config.instance,
            time=datetime.now(timezone.utc),
            started=self.started,
            processed=c.processed,
            stored=c.stored,
            rejected=c.rejected,
            deduplicated=c.deduplicated,
            spooled=self.spool.points,
            lag_s=round(c.lag_s, 3) if c.lag_s is not None else None,
            database=c.database,  # type: ignore[arg-type]
        )

    def _report(self) -> None:
        status = self.status()
        self._open.lines.append(points.status(status))
        self.reply(Publish(self.status_topic, contract.encode(status), True))


def main(site: Site, config: AggregatorConfig, inbox: Connection, replies: Connection, level: int) -> None:
    """The store process: take chunks from the intake until it sends None or goes away."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    lock = threading.Lock()

    def reply(message: Reply) -> None:
        with lock:  # the reader and the writer thread both reply
            try:
                replies.send(message)
            except OSError:
                stop.set()  # the intake is gone: nothing can be acknowledged any more

    def receive(timeout: float) -> Optional[Chunk]:
        try:
            if not inbox.poll(timeout):
                return None
            item = inbox.recv()
        except (EOFError, OSError):
            item = None
        if item is None:
            stop.set()
        return item

    def wait(seconds: float) -> bool:
        receive(seconds)  # nothing but the stop can come before "ready"
        return stop.is_set()

    store = Store(site, config, reply)
    if store.prepare(wait):
        reply(Ready())
        store.serve(receive, stop)
