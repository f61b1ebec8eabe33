"""Crowd levels per zone: green / yellow / red from occupancy and density, unknown when blind.

Escalation is immediate. De-escalation waits until the value has stayed below the level's threshold
minus a margin for ``dwell_s`` (in the data's own time), so a zone hovering at a threshold does not
flap. A zone whose boundary is not fully covered by live devices is ``unknown``, never green: a
dead sensor must not look like an empty lane. Nor is a zone whose occupancy band (how far off the
estimate may be, one standard deviation) reaches red: it is at least yellow; and a zone already
crowded (yellow by its estimate) whose band reaches red is red (``red_on_band``), once nights have
measured the band (before, it is a guess): counters miss people more often than they invent them, so
a crowded estimate errs low, and a zone that may be full is treated as full.

An optional trigger on inflow (people entering per minute) catches a surge before occupancy does.

Defaults follow Chinese scenic-area practice (warn at 80 % of the instantaneous capacity, stop entry
at 100 %) and Fruin's levels of service for walkways (density over 0.72 persons/m², level D, is
crowded; over 1.08, level E, is at the limit of moving flow).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional

from aggregator.config import LevelRule, LevelsConfig
from aggregator.rollup import ZoneState
from lanewatch.site.model import Site

RANK = {"green": 0, "yellow": 1, "red": 2}
TREND_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Change:
    zone: str
    level: str
    previous: str
    reason: str
    state: ZoneState
    coverage: float
    trend: str
    time: datetime


@dataclass
class _Zone:
    level: str = "unknown"
    since: Optional[datetime] = None  # when it entered the level
    reason: str = ""  # why it did
    clear_since: Optional[datetime] = None  # when the value first fell below the clear threshold
    history: deque = field(default_factory=lambda: deque(maxlen=600))  # (time, occupancy)


def _target(rule: LevelRule, state: ZoneState) -> tuple[str, str]:
    """The level the numbers call for, and why."""
    share = state.occupancy / state.capacity
    level, reason = "green", f"occupancy {share:.0%} of capacity {state.capacity}"
    if share >= rule.red_at:
        level = "red"
    elif share >= rule.yellow_at:
        level = "yellow"
    if state.density is not None:
        if rule.density_red is not None and state.density >= rule.density_red and level != "red":
            level, reason = "red", f"density {state.density:.2f} persons/m² (limit {rule.density_red:g})"
        elif rule.density_yellow is not None and state.density >= rule.density_yellow and level == "green":
            level, reason = "yellow", f"density {state.density:.2f} persons/m² (warning at {rule.density_yellow:g})"
    upper = (state.occupancy + state.band) / state.capacity
    if level == "green" and upper >= rule.red_at:  # an estimate that may be red is never shown green
        level, reason = "yellow", f"{reason}, but the estimate may be as high as {upper:.0%} (±{state.band})"
    elif level == "yellow" and upper >= rule.red_at and rule.red_on_band and state.measured:  # may be full: full
        level, reason = "red", f"{reason}, and the estimate may be as high as {upper:.0%} (±{state.band})"
    inflow = state.inflow_per_min
    if rule.inflow_red_per_min is not None and inflow >= rule.inflow_red_per_min and level != "red":
        level, reason = "red", f"inflow {inflow:.0f} people/min (limit {rule.inflow_red_per_min:g})"
    elif rule.inflow_yellow_per_min is not None and inflow >= rule.inflow_yellow_per_min and level == "green":
        level, reason = "yellow", f"inflow {inflow:.0f} people/min (warning at {rule.inflow_yellow_per_min:g})"
    return level, reason


def _clears(rule: LevelRule, state: ZoneState, level: str) -> bool:
    """True when the values are far enough below ``level``'s thresholds to start leaving it."""
    share = state.occupancy / state.capacity
    limit = rule.red_at if level == "red" else rule.yellow_at
    density_limit = rule.density_red if level == "red" else rule.density_yellow
    below = share < limit - rule.clear_margin
    if state.density is not None and density_limit is not None:
        below = below and state.density < density_limit * (1 - rule.clear_margin)
    inflow_limit = rule.inflow_red_per_min if level == "red" else rule.inflow_yellow_per_min
    if inflow_limit is not None:
        below = below and state.inflow_per_min < inflow_limit * (1 - rule.clear_margin)
    return below


class LevelEngine:
    def __init__(self, site: Site, config: LevelsConfig) -> None:
        self.site = site
        self.config = config
        self.zones = {z.id: _Zone() for z in site.zones}

    def rule(self, zone_id: str) -> LevelRule:
        return self.config.zones.get(zone_id, self.config.default)

    def level(self, zone_id: str) -> str:
        return self.zones[zone_id].level

    def held(self, zone_id: str) -> tuple[str, Optional[datetime], str]:
        """The zone's level, since when, and why."""
        zone = self.zones[zone_id]
        return zone.level, zone.since, zone.reason

    def red_band(self, state: ZoneState) -> int:
        """The zone's band where it counts toward red (``red_on_band``, once nights have measured it), else 0:
        what the early warning adds to its forecast to foretell the reds the band brings."""
        return state.band if self.rule(state.zone).red_on_band and state.measured else 0

    def escalates(self, state: ZoneState) -> bool:
        """Whether the numbers now call for a higher level than the zone shows (escalation is immediate)."""
        current = self.zones[state.zone].level
        return current != "unknown" and RANK[_target(self.rule(state.zone), state)[0]] > RANK[current]

    def update(self, state: ZoneState, coverage: float, missing: list[str], when: datetime) -> Optional[Change]:
        """The zone's new level after this observation; a Change when it differs from the last one."""
        zone = self.zones[state.zone]
        zone.history.append((when, state.occupancy))
        if coverage < 1.0:
            return self._move(state, "unknown", f"no data from {', '.join(missing)}", coverage, when)
        rule = self.rule(state.zone)
        target, reason = _target(rule, state)
        current = zone.level
        if current == "unknown" or RANK[target] >= RANK[current]:
            zone.clear_since = None
            return self._move(state, target, reason, coverage, when)
        if not _clears(rule, state, current):  # inside the hysteresis band: stay
            zone.clear_since = None
            return None
        zone.clear_since = zone.clear_since or when
        if when - zone.clear_since < timedelta(seconds=rule.dwell_s):
            return None
        zone.clear_since = None
        return self._move(state, target, f"{reason}, below the threshold for {rule.dwell_s:g} s", coverage, when)

    def _move(self, state: ZoneState, level: str, reason: str, coverage: float, when: datetime) -> Optional[Change]:
        zone = self.zones[state.zone]
        if level == zone.level:
            return None
        previous, zone.level = zone.level, level
        zone.since, zone.reason = when, reason
        return Change(state.zone, level, previous, reason, state, coverage, self.trend(state.zone), when)

    def trend(self, zone_id: str) -> str:
        history = self.zones[zone_id].history
        if len(history) < 2:
            return "unknown"
        now, latest = history[-1]
        then, earliest = next(((t, o) for t, o in history if now - t <= TREND_WINDOW), history[0])
        if now == then:
            return "unknown"
        step = max(1, self.site.zone(zone_id).capacity // 50)  # 2 % of capacity
        if latest - earliest >= step:
            return "rising"
        if earliest - latest >= step:
            return "falling"
        return "steady"
