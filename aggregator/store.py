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

Levels, notices and early warnings are evaluated on the data's own clock: live, at every batch cut;
in a backlog or a replay, whenever the data's time moves on by ``levels.step_s`` (and when the stream
pauses), so that the levels follow the data's timeline step by step however fast it is caught up.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from aggregator import notices, points
from aggregator.config import AggregatorConfig
from aggregator.forecast import EarlyWarning, Forecaster
from aggregator.influx import Database, DatabaseError, PointsRefusedError, RefusedError, UnavailableError, rows
from aggregator.levels import Change, LevelEngine
from aggregator.rollup import LineState, RollUp
from aggregator.spool import Spool
from aggregator.validation import InvalidMessageError, Validator
from lanewatch import contract
from lanewatch.site.model import Site

log = logging.getLogger(__name__)
QUIET_S = 1.0  # a backlog or replay that pauses this long is caught up: its last time step is evaluated

#: What the intake sends: a chunk id and its messages (topic, payload), or None to finish.
#: A chunk of messages from the intake: its id, and (topic, payload, sent with an expiry) for each message.
Chunk = tuple[int, list[tuple[str, bytes, bool]]]
#: What this process sends back: ("ready",), ("stored", [chunk ids]), ("publish", topic, payload, retain).
Reply = tuple[Any, ...]


@dataclass
class Batch:
    lines: list[str]
    chunks: list[int]  # stored once these lines are
    messages: int
    latest: Optional[datetime]  # end of the newest count window in it


@dataclass
class Counters:
    processed: int = 0
    stored: int = 0
    rejected: int = 0
    deduplicated: int = 0
    lag_s: Optional[float] = None
    database: str = "ok"


class Dedup:
    """(device, boot id, seq) already taken in this run: per device, its latest boots, each a low-water mark
    plus the seqs above it.

    Bounded whatever a device sends: one that keeps inventing boot ids or skipping seqs only makes this
    forget its own oldest ones. The worst that can do is take an old window again, which changes no total
    (a window's point is keyed by its time; the roll-up follows totals, not windows).
    """

    BOOTS = 8  # per device
    ABOVE = 10_000  # seqs held above the low-water mark, per boot

    def __init__(self) -> None:
        self._seen: dict[str, OrderedDict[str, tuple[int, set[int]]]] = {}

    def seen(self, device: str, boot_id: str, seq: int) -> bool:
        boots = self._seen.setdefault(device, OrderedDict())
        if boot_id in boots:
            boots.move_to_end(boot_id)
        else:
            boots[boot_id] = (-1, set())
            if len(boots) > self.BOOTS:
                boots.popitem(last=False)
        mark, above = boots[boot_id]
        if seq <= mark or seq in above:
            return True
        above.add(seq)
        while mark + 1 in above:  # seqs are consecutive per boot: the set stays small
            mark += 1
            above.discard(mark)
        if len(above) > self.ABOVE:  # a device skipping seqs: forget the lower half of what it skipped
            cut = sorted(above)[len(above) // 2]
            mark, above = cut, {s for s in above if s > cut}
        boots[boot_id] = (mark, above)
        return False


@dataclass
class _Open:
    lines: list[str] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    messages: int = 0
    latest: Optional[datetime] = None


class Store:
    def __init__(self, site: Site, config: AggregatorConfig, reply: Callable[[Reply], None]) -> None:
        self.site_id = site.site.id
        self.config = config
        self.reply = reply
        self.validator = Validator(site, config.validation)
        self.store = "store" in config.roles
        self.rollup = RollUp(site, config.validation) if "rollup" in config.roles else None
        self.db = Database(config.influxdb)
        self.spool = Spool(config.state_dir / "spool.db")
        self.dedup = Dedup()
        self.counters = Counters()
        self.started = datetime.now(timezone.utc)
        self.started_monotonic = time.monotonic()
        self.devices = [d.id for d in site.devices]
        self.devices_of_id = frozenset(self.devices)
        self.zones_of = {e.id: e.zone or "" for e in site.entrances}
        self.status_topic = contract.KINDS["status"].template.format(site=self.site_id, instance=config.instance)
        self.deadletter_topic = contract.KINDS["deadletter"].template.format(
            site=self.site_id, instance=config.instance
        )
        self.levels = LevelEngine(site, config.levels) if self.rollup is not None else None
        horizon = config.levels.forecast_min
        self.forecast = Forecaster(site.site.timezone, horizon) if self.levels is not None and horizon else None
        self._evaluated: Optional[datetime] = None  # the data time of the latest level evaluation
        self._data_time: Optional[datetime] = None  # the end of the newest count window applied
        self._last_chunk = time.monotonic()
        self._step = timedelta(seconds=config.levels.step_s)
        self.site = site
        self.devices_of = {e.id: [d.id for d in site.devices_at(e.id)] for e in site.entrances}
        self.boundary = {z.id: [e.id for e, _sign in site.boundary_entrances(z.id)] for z in site.zones}
        self.last_seen: dict[str, float] = {}  # device -> monotonic time of its last message
        self.offline: set[str] = set()
        self.faults: dict[str, tuple[str, datetime]] = {}  # device -> (problem, since), as last reported
        self.camera_failed: set[str] = set()
        self.disk_full: set[str] = set()
        self.rejected_at: dict[str, tuple[float, str]] = {}  # device -> (monotonic time, why) of its latest rejection
        self._open = _Open()
        self._batches: queue.Queue[Optional[Batch]] = queue.Queue(maxsize=4)
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self._last_error = ""

    # --- life cycle ------------------------------------------------------------------------------

    def prepare(self, wait: Callable[[float], bool]) -> bool:
        """Wait for the database, write what the spool kept, and rebuild the roll-up from stored state.

        ``wait(seconds)`` pauses between attempts and returns True when the aggregator is stopping.
        """
        delay = 1.0
        while True:
            try:
                self.db.prepare()
                self._drain_spool(until_empty=True)
                if self.rollup is not None:
                    self._restore()
                self._writer.start()
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
            if chunk is not None:
                self.take(*chunk)
                self._last_chunk = time.monotonic()
            now = time.monotonic()
            if now >= next_status:
                self._report()
                next_status = now + self.config.status_s
            if now >= next_cut or len(self._open.lines) >= self.config.influxdb.batch_size:
                self.cut()
                next_cut = now + interval
            if stop.is_set():
                break
        self._report()
        self.cut()
        self._batches.put(None)
        self._writer.join()
        self.spool.close()
        self.db.close()
        c = self.counters
        log.info("stopped: processed %d, stored %d, rejected %d, deduplicated %d, spooled %d",
                 c.processed, c.stored, c.rejected, c.deduplicated, self.spool.points)  # fmt: skip

    def _restore(self) -> None:
        assert self.rollup is not None
        site = self.site_id
        lines: dict[tuple[str, str], LineState] = {}
        for series in self.db.query(
            f"SELECT * FROM line_state WHERE site = '{site}' GROUP BY device, line ORDER BY time DESC LIMIT 1"
        ):
            for row in rows(series):
                key = (series["tags"]["device"], series["tags"]["line"])
                when = points.EPOCH + timedelta(microseconds=row["time"] // 1000)
                lines[key] = LineState(row["boot_id"], when, row["total_in"], row["total_out"], row["net"])
        occupancy: dict[str, tuple[int, datetime]] = {}
        for series in self.db.query(
            f"SELECT occupancy FROM zones WHERE site = '{site}' GROUP BY zone ORDER BY time DESC LIMIT 1"
        ):
            for row in rows(series):
                when = points.EPOCH + timedelta(microseconds=row["time"] // 1000)
                occupancy[series["tags"]["zone"]] = (row["occupancy"], when)
        self.rollup.restore(lines, occupancy)
        if lines:
            log.info("roll-up restored: %d counting lines, %d zones", len(lines), len(occupancy))
        if self.forecast is not None:  # the usual daily curve, from the last week's stored occupancy
            for series in self.db.query(
                f"SELECT last(occupancy) FROM zones WHERE site = '{site}' AND time > now() - 8d "
                "GROUP BY time(5m), zone fill(none)"
            ):
                for row in rows(series):
                    when = points.EPOCH + timedelta(microseconds=row["time"] // 1000)
                    self.forecast.learn(series["tags"]["zone"], when, row["last"])

    # --- the reader thread -----------------------------------------------------------------------

    def take(self, chunk_id: int, messages: list[tuple[str, bytes, bool]]) -> None:
        now = datetime.now(timezone.utc)
        batch = self._open
        for topic, payload, live in messages:
            self.counters.processed += 1
            try:
                self._take_one(topic, payload, live, now, batch)
            except InvalidMessageError as exc:
                self._reject(topic, payload, str(exc), now)
            except Exception as exc:  # whatever a message holds, it must not stop the aggregator
                log.exception("failed to handle a message on %s", topic[:200])
                self._reject(topic, payload, f"the aggregator failed on it ({type(exc).__name__}: {exc})", now)
        batch.chunks.append(chunk_id)
        batch.messages += len(messages)

    def _take_one(self, topic: str, payload: bytes, live: bool, now: datetime, batch: _Open) -> None:
        """Validate, deduplicate, roll up and store one message; InvalidMessageError when it must not count."""
        accepted = self.validator.check(topic, payload, now, live)
        body = accepted.message
        entrance = accepted.entrance.id
        self._saw(body)
        if isinstance(body, contract.CountWindow):
            if self.dedup.seen(body.device, body.boot_id, body.seq):
                self.counters.deduplicated += 1
                return
            if self.rollup is not None:
                self._step_levels(body.window_end)
                self.rollup.apply(body, entrance)  # ImplausibleTotalsError: nothing applied, nothing stored
                self._data_time = max(self._data_time or body.window_end, body.window_end)
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
        if len(parts) > 4 and parts[2] == self.site_id and parts[3] == "devices" and parts[4] in self.devices_of_id:
            self.rejected_at[parts[4]] = (time.monotonic(), reason)  # the ACL lets a device write only there
        letter = contract.DeadLetter(
            site=self.site_id,
            time=now,
            instance=self.config.instance,
            topic=topic[:1024],
            reason=reason[: contract.MAX_TEXT],
            payload_b64=base64.b64encode(payload[: 12 * 1024]).decode("ascii"),
            payload_bytes=min(len(payload), contract.MAX_MQTT_PAYLOAD),
        )
        self.reply(("publish", self.deadletter_topic, contract.encode(letter), False))

    def _saw(self, body: contract.Message) -> None:
        """Keep track of which devices are alive: their zones are unknown without them."""
        device = getattr(body, "device", "")
        self.last_seen[device] = time.monotonic()
        if isinstance(body, contract.Availability):
            (self.offline.add if body.state == "offline" else self.offline.discard)(device)
        elif isinstance(body, contract.Heartbeat):
            (self.camera_failed.add if body.camera == "failed" else self.camera_failed.discard)(device)
            (self.disk_full.add if body.storage == "full" else self.disk_full.discard)(device)

    def _problems(self) -> dict[str, str]:
        """Every device that cannot be counted on now, and why."""
        timeout = self.config.levels.device_timeout_s
        now = time.monotonic()
        problems = dict.fromkeys(self.validator.clocks.off(), "clock_off")
        problems.update(dict.fromkeys(self.disk_full, "disk_full"))
        problems.update({d: "bad_data" for d, (when, _why) in self.rejected_at.items() if now - when < timeout})
        problems.update(
            {d: "silent" for d in self.devices if now - self.last_seen.get(d, self.started_monotonic) > timeout}
        )
        problems.update(dict.fromkeys(self.camera_failed, "camera_failed"))
        problems.update(dict.fromkeys(self.offline, "offline"))
        return problems

    def _report_faults(self, problems: dict[str, str], when: datetime) -> None:
        """A retained notice for the technicians whenever a device's problem starts, changes or ends."""
        for device in sorted(set(problems) | set(self.faults)):
            problem = problems.get(device, "recovered")
            previous = self.faults.get(device)
            if previous is not None and previous[0] == problem:
                continue
            if previous is None and problem == "recovered":
                continue
            since = when if previous is None or problem == "recovered" else previous[1]
            if problem == "recovered":
                del self.faults[device]
            else:
                self.faults[device] = (problem, since)
            why = self.rejected_at[device][1] if problem == "bad_data" else ""
            fault = notices.fault(self.site, device, problem, since, when, why)
            self.reply(("publish", contract.topic_for(fault), contract.encode(fault), True))
            log.warning("device %s: %s", device, problem)

    def _evaluate_levels(self) -> None:
        """Every zone's level after the latest data; notices and retained state for every change."""
        assert self.rollup is not None
        assert self.levels is not None
        zones = self.rollup.zones()
        times = [z.time for z in zones if z.time is not None]
        if not times:
            return
        when = max(times)  # the data's own clock, so that dwell times hold in replays too
        self._evaluated = when
        problems = self._problems()
        self._report_faults(problems, datetime.now(timezone.utc))
        dead = {device for device, problem in problems.items() if problem not in notices.COUNTING}
        changes, warnings = [], []
        for state in zones:
            boundary = self.boundary[state.zone]
            missing = sorted({d for e in boundary for d in self.devices_of[e] if d in dead})
            covered = [e for e in boundary if not any(d in dead for d in self.devices_of[e])]
            coverage = len(covered) / len(boundary) if boundary else 1.0
            change = self.levels.update(state, coverage, missing, when)
            if change is not None:
                changes.append(change)
            if self.forecast is not None and coverage == 1.0:
                self.forecast.observe(state.zone, when, state.occupancy)
                level = self.levels.level(state.zone)
                warning = self.forecast.warn(state.zone, level, state.capacity, self.levels.rule(state.zone))
                if warning is not None:
                    warnings.append(warning)
        shares = {z.zone: z.occupancy / z.capacity for z in zones}
        for change in changes:
            self._announce(change, shares)
        for warning in warnings:
            self._warn(warning, shares)

    def _announce(self, change: Change, shares: dict[str, float]) -> None:
        assert self.levels is not None
        state = notices.level_state(self.site, change)
        self.reply(("publish", contract.topic_for(state), contract.encode(state), True))
        self._send(notices.notice(self.site, change, self.levels.level, shares.__getitem__))
        self._open.lines.append(points.level(self.site_id, change.zone, change.level, change.previous,
                                             change.reason, change.coverage, change.time))  # fmt: skip
        log.info("zone %s: %s -> %s (%s)", change.zone, change.previous, change.level, change.reason)

    def _warn(self, warning: EarlyWarning, shares: dict[str, float]) -> None:
        assert self.levels is not None
        self._send(notices.predicted(self.site, warning, self.levels.level, shares.__getitem__))
        self._open.lines.append(points.warning(self.site_id, warning.zone, warning.predicted, warning.capacity,
                                               warning.minutes, warning.reason, warning.time))  # fmt: skip
        log.info("zone %s: predicted red (%s)", warning.zone, warning.reason)

    def _send(self, message: contract.DiversionNotice) -> None:
        """A notice on the zone's topic and on each of its signed entrances' topics."""
        payload = contract.encode(message)
        for topic in notices.topics(self.site, message):
            self.reply(("publish", topic, payload, False))

    def cut(self) -> None:
        """Hand the open batch to the writer; blocks while the writer is behind (the intake then waits)."""
        if self.rollup is not None:
            if self.levels is not None and self._levels_due() and self._settled():
                self._evaluate_levels()
            self._open.lines.extend(self.rollup.take_points())
        batch = self._open
        if not batch.lines and not batch.chunks:
            return
        self._open = _Open()
        self._batches.put(Batch(batch.lines, batch.chunks, batch.messages, batch.latest))

    def _step_levels(self, window_end: datetime) -> None:
        """Before the data's clock moves on by ``step_s``, evaluate the levels at the time it leaves.

        In a backlog or a replay this keeps the levels on the data's own timeline, one complete
        time step after another, however fast the messages come.
        """
        data, done = self._data_time, self._evaluated
        if data is None or window_end <= data or (done is not None and data - done < self._step):
            return
        if self.levels is not None and self._levels_due():
            self._evaluate_levels()
        if self.rollup is not None:  # every step's occupancy is kept, not only the last one of a batch
            self._open.lines.extend(self.rollup.take_points())

    def _settled(self) -> bool:
        """Whether levels may be evaluated at a batch cut: live data, nothing new, or the stream paused."""
        data = self._data_time
        if data is None or data == self._evaluated:
            return True
        if datetime.now(timezone.utc) - data < self._step:
            return True
        return time.monotonic() - self._last_chunk >= QUIET_S

    def _levels_due(self) -> bool:
        """After a start, wait until every device was heard (or the timeout passed): no false unknowns."""
        if len(self.last_seen) >= len(self.devices):
            return True
        return time.monotonic() - self.started_monotonic > self.config.levels.device_timeout_s

    # --- the writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            try:
                batch = self._batches.get(timeout=1.0)
            except queue.Empty:
                if self.spool.points:
                    self._drain_spool()
                continue
            if batch is None:
                if self.spool.points:
                    self._drain_spool()
                return
            if batch.lines:
                self._store(batch.lines)
            if batch.chunks:
                self.reply(("stored", batch.chunks))
            self.counters.stored += batch.messages
            if batch.latest is not None:
                self.counters.lag_s = max(0.0, (datetime.now(timezone.utc) - batch.latest).total_seconds())

    def _store(self, lines: list[str]) -> None:
        """Into the database, or into the spool; returns only when the points are durable somewhere."""
        if self.spool.points:  # older points wait there: keep the order
            self._drain_spool()
        if not self.spool.points:
            deadline = time.monotonic() + self.config.influxdb.spool_after_s
            delay = 0.2
            while True:
                try:
                    self._write(lines)
                    self._database_ok()
                    return
                except RefusedError as exc:
                    self._database_failed("refused", exc)
                    break
                except UnavailableError as exc:
                    self._database_failed("unreachable", exc)
                    if time.monotonic() + delay > deadline:
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        self.spool.put(lines)

    def _drain_spool(self, until_empty: bool = False) -> None:
        """Write spooled batches, oldest first, until one fails (or the spool is empty)."""
        while True:
            batch = self.spool.oldest()
            if batch is None:
                return
            try:
                self._write(batch.lines)
            except (RefusedError, UnavailableError) as exc:
                self._database_failed("refused" if isinstance(exc, RefusedError) else "unreachable", exc)
                if until_empty:
                    raise
                return
            self.spool.remove(batch)
            self._database_ok()
            if not self.spool.points:
                log.info("spool drained: every kept point is in InfluxDB")

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

    def _database_ok(self) -> None:
        if self.counters.database != "ok":
            log.info("InfluxDB is back")
        self.counters.database = "ok"
        self._last_error = ""

    def _database_failed(self, state: str, exc: DatabaseError) -> None:
        self.counters.database = state
        if str(exc) != self._last_error:  # once per distinct error, not once per retry
            log.error("%s; spooling to %s meanwhile", exc, self.spool.path)
            self._last_error = str(exc)

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
        self.reply(("publish", self.status_topic, contract.encode(status), True))
