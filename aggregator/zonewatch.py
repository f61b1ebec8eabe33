"""Crowd levels, early warnings and their notices, judged on the data's own clock.

Live, the zones are judged at every batch cut, and at once when a window calls for a higher level
(a batch is then cut at that window: the notice does not wait for the flush interval). In a backlog
or a replay they are judged whenever the data's time moves on by ``levels.step_s`` (and when the
stream pauses), so that the levels follow the data's timeline step by step however fast it is
caught up, and dwell times hold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

from aggregator import notices, points
from aggregator.config import AggregatorConfig
from aggregator.devices import DeviceHealth
from aggregator.forecast import EarlyWarning, Forecaster
from aggregator.handover import Publish
from aggregator.levels import Change, LevelEngine
from aggregator.rollup import RollUp, ZoneState
from lanewatch import contract
from lanewatch.site.model import Site

log = logging.getLogger(__name__)
QUIET_S = 1.0  # a backlog or replay that pauses this long is caught up: its last time step is judged
REFRESH_S = 5.0  # a zone's retained state is published again at most this often between level changes
KEEP_S = 60.0  # ... and at least this often


class ZoneWatch:
    """Judges the roll-up's zones; sends what changed (``publish``) and keeps it as points (``lines``)."""

    def __init__(
        self,
        site: Site,
        config: AggregatorConfig,
        rollup: RollUp,
        health: DeviceHealth,
        clock_off: Callable[[], Iterable[str]],
        publish: Callable[[Publish], None],
    ) -> None:
        self.site, self.site_id = site, site.site.id
        self.rollup, self.health, self.clock_off, self.publish = rollup, health, clock_off, publish
        self.levels = LevelEngine(site, config.levels)
        self.uncertain_at = config.drift.band_share
        horizon = config.levels.forecast_min
        self.forecast = Forecaster(site.site.timezone, horizon) if horizon else None
        self.step = timedelta(seconds=config.levels.step_s)
        self.devices_of = {e.id: [d.id for d in site.devices_at(e.id)] for e in site.entrances}
        self._night_flags: dict[str, str] = {}  # devices the latest night flagged, and why
        self.boundary = {z.id: [e.id for e, _sign in site.boundary_entrances(z.id)] for z in site.zones}
        self.evaluated: Optional[datetime] = None  # the data time of the latest judgement
        self.data_time: Optional[datetime] = None  # the end of the newest count window applied
        self.last_chunk = time.monotonic()  # when the latest messages came in
        #: per zone, when (this clock) its retained state was last published, with its numbers then
        self._published: dict[str, tuple[float, tuple[int, int, float]]] = {}

    def before_window(self, window_end: datetime, lines: list[str]) -> None:
        """Before a window moves the data's clock on by ``step_s``, judge the zones at the time it leaves."""
        data, done = self.data_time, self.evaluated
        if data is None or window_end <= data or (done is not None and data - done < self.step):
            return
        if self.health.all_heard():
            self.evaluate(lines)
        lines.extend(self.rollup.take_points())  # every step's occupancy is kept, not only a batch's last

    def after_window(self, window_end: datetime) -> None:
        self.data_time = max(self.data_time or window_end, window_end)

    def at_cut(self, lines: list[str]) -> None:
        """At a batch cut: judge the zones if the data is live, unchanged or paused; keep the occupancy."""
        if self.health.all_heard() and self._settled():
            self.evaluate(lines)
        lines.extend(self.rollup.take_points())

    def urgent(self) -> bool:
        """Live data calls for a higher level than a zone shows: judge and store now, not at the next cut."""
        if self.data_time is None or self.data_time == self.evaluated or not self._live():
            return False
        return self.health.all_heard() and any(self.levels.escalates(state) for state in self.rollup.zones())

    def _settled(self) -> bool:
        """Nothing new since the last judgement, live data, or a stream that paused."""
        if self.data_time is None or self.data_time == self.evaluated or self._live():
            return True
        return time.monotonic() - self.last_chunk >= QUIET_S

    def _live(self) -> bool:
        """The newest data is less than a time step old: not a backlog or a replay."""
        return self.data_time is not None and datetime.now(timezone.utc) - self.data_time < self.step

    def evaluate(self, lines: list[str]) -> None:
        """Every zone's level after the latest data; notices and retained state for every change."""
        zones = self.rollup.zones()
        times = [z.time for z in zones if z.time is not None]
        if not times:
            return
        for night in self.rollup.take_nights():
            self._night_flags = {flag.device: flag.why for flag in night.flags}
            for flag in night.flags:
                log.warning("device %s: %s", flag.device, flag.why)
        live = self.rollup.factors.hourly.why
        for device in live.keys() - self.health.miscounting.keys():
            log.warning("device %s: %s", device, live[device])
        self.health.miscounting = {**self._night_flags, **live}
        when = max(times)  # the data's own clock, so that dwell times hold in replays too
        self.evaluated = when
        problems = self.health.problems(self.clock_off())
        for fault in self.health.fault_changes(problems, datetime.now(timezone.utc)):
            self.publish(Publish(contract.topic_for(fault), contract.encode(fault), True))
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
            else:
                self._refresh(state, coverage, when)
            if self.forecast is not None and coverage == 1.0:
                self.forecast.observe(state.zone, when, state.occupancy)
                level = self.levels.level(state.zone)
                rule, band = self.levels.rule(state.zone), self.levels.red_band(state)
                warning = self.forecast.warn(state.zone, level, state.capacity, rule, band)
                if warning is not None:
                    warnings.append(warning)
        shares = {z.zone: z.occupancy / z.capacity for z in zones}
        for change in changes:
            self._announce(change, shares, lines)
        for warning in warnings:
            self._warn(warning, shares, lines)

    def _refresh(self, state: ZoneState, coverage: float, when: datetime) -> None:
        """Keep a zone's retained state current between its level changes (``alerts state`` and every
        receiver that connects read it): again when its numbers moved (at most every ``REFRESH_S``), and
        at least every ``KEEP_S``."""
        level, since, reason = self.levels.held(state.zone)
        last = self._published.get(state.zone)
        now = time.monotonic()
        if since is None or (last is not None and now - last[0] < REFRESH_S):
            return
        numbers = (state.occupancy, state.band, coverage)
        if last is not None and numbers == last[1] and now - last[0] < KEEP_S:
            return
        current = notices.current_state(self.site, state, level, coverage, since, reason, when)
        self.publish(Publish(contract.topic_for(current), contract.encode(current), True))
        self._published[state.zone] = (now, numbers)

    def _announce(self, change: Change, shares: dict[str, float], lines: list[str]) -> None:
        state = notices.level_state(self.site, change)
        self.publish(Publish(contract.topic_for(state), contract.encode(state), True))
        self._published[change.zone] = (time.monotonic(), (change.state.occupancy, change.state.band, change.coverage))
        self._send(notices.notice(self.site, change, self.levels.level, shares.__getitem__, self.uncertain_at))
        lines.append(points.level(self.site_id, change.zone, change.level, change.previous, change.reason,
                                  change.coverage, change.time))  # fmt: skip
        log.info("zone %s: %s -> %s (%s)", change.zone, change.previous, change.level, change.reason)

    def _warn(self, warning: EarlyWarning, shares: dict[str, float], lines: list[str]) -> None:
        self._send(notices.predicted(self.site, warning, self.levels.level, shares.__getitem__))
        lines.append(points.warning(self.site_id, warning.zone, warning.predicted, warning.capacity,
                                    warning.minutes, warning.reason, warning.time))  # fmt: skip
        log.info("zone %s: predicted red (%s)", warning.zone, warning.reason)

    def _send(self, message: contract.DiversionNotice) -> None:
        """A notice on the zone's topic and on each of its signed entrances' topics."""
        payload = contract.encode(message)
        for topic in notices.topics(self.site, message):
            self.publish(Publish(topic, payload, False))
