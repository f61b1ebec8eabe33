"""Early warning: each zone's occupancy a quarter of an hour ahead, and a `predicted red` before red.

Two views of the next minutes are averaged:
- the recent flow: occupancy now plus its change over the last ``slope_min`` minutes, continued;
- the usual daily curve: occupancy now times how much the zone usually grows from this time of day
  to the horizon (the curve is learned from the data itself, in 5-minute bins of local time, each
  bin an exponential average over the days seen, and rebuilt from InfluxDB at a restart).
Without a curve yet (the first day), the recent flow alone decides.

A warning is raised when the forecast reaches the zone's red threshold while the zone is green or
yellow and filling. Where the level engine turns a crowded zone red when its band reaches red
(``red_on_band``), the warning looks ahead the same way: forecast plus band (the estimate of a crowded
zone errs low, so its red comes by the band before the estimate gets there), else it would never foretell
those reds. It is not repeated until the forecast has stayed below the clear threshold for
the zone's dwell time, so a zone hovering near the line gets one warning, not one a minute.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Optional
from zoneinfo import ZoneInfo

from aggregator.config import LevelRule

BIN_MIN = 5
BINS = 24 * 60 // BIN_MIN
DAY_WEIGHT = 0.5  # weight of the newest day in the daily curve


@dataclass(frozen=True)
class EarlyWarning:
    zone: str
    predicted: int  # people expected at the horizon
    capacity: int
    minutes: int  # the horizon
    occupancy: int  # now
    time: datetime
    band: int = 0  # how far off the forecast may be besides (the occupancy's band, when it counts toward red)

    @property
    def reason(self) -> str:
        band = f" ±{self.band}" if self.band else ""
        return (
            f"forecast {self.predicted / self.capacity:.0%}{band} of capacity {self.capacity} in {self.minutes} min "
            f"(now {self.occupancy / self.capacity:.0%})"
        )


@dataclass
class _Zone:
    history: deque = field(default_factory=lambda: deque(maxlen=120))  # (time, occupancy)
    curve: list[Optional[float]] = field(default_factory=lambda: [None] * BINS)
    bin: Optional[int] = None
    armed: bool = True
    clear_since: Optional[datetime] = None


class Forecaster:
    def __init__(self, timezone: str, horizon_min: int = 15, slope_min: int = 15, curve_weight: float = 0.5) -> None:
        self.tz = ZoneInfo(timezone)
        self.curve_weight = curve_weight
        self.horizon = timedelta(minutes=horizon_min)
        self.slope = timedelta(minutes=slope_min)
        self.zones: dict[str, _Zone] = {}

    def _bin(self, when: datetime) -> int:
        local = when.astimezone(self.tz)
        return (local.hour * 60 + local.minute) // BIN_MIN

    def learn(self, zone_id: str, when: datetime, occupancy: float) -> None:
        """Fold one value into the zone's daily curve (also used to rebuild it from stored data)."""
        curve = self.zones.setdefault(zone_id, _Zone()).curve
        b = self._bin(when)
        old = curve[b]
        curve[b] = occupancy if old is None else DAY_WEIGHT * occupancy + (1 - DAY_WEIGHT) * old

    def observe(self, zone_id: str, when: datetime, occupancy: int) -> None:
        zone = self.zones.setdefault(zone_id, _Zone())
        if zone.history and when <= zone.history[-1][0]:
            return
        b = self._bin(when)
        if zone.bin is not None and b != zone.bin and zone.history:  # a bin ended: its last value joins the curve
            self.learn(zone_id, zone.history[-1][0], zone.history[-1][1])
        zone.bin = b
        zone.history.append((when, occupancy))

    def predict(self, zone_id: str) -> Optional[float]:
        """Occupancy expected at the horizon after the latest observation; None without enough history."""
        zone = self.zones.get(zone_id)
        if zone is None or len(zone.history) < 2:
            return None
        now, occupancy = zone.history[-1]
        then, earlier = next(((t, o) for t, o in zone.history if now - t <= self.slope), zone.history[0])
        if now - then < self.slope / 2:
            return None
        flow = (occupancy - earlier) / ((now - then) / self.horizon)
        recent = occupancy + flow
        usual_now, usual_then = zone.curve[self._bin(now)], zone.curve[self._bin(now + self.horizon)]
        if usual_now is None or usual_then is None or usual_now < 1:
            return max(0.0, recent)
        usual = occupancy * min(2.0, max(0.5, usual_then / usual_now))
        return max(0.0, (1 - self.curve_weight) * recent + self.curve_weight * usual)

    def warn(self, zone_id: str, level: str, capacity: int, rule: LevelRule, band: int = 0) -> Optional[EarlyWarning]:
        """A warning when the zone is expected to reach red within the horizon (and was not warned yet);
        ``band``: the occupancy's band where the level engine counts it toward red (0 elsewhere)."""
        zone = self.zones.get(zone_id)
        predicted = self.predict(zone_id)
        if zone is None or predicted is None:
            return None
        now, occupancy = zone.history[-1]
        upper = predicted + band if predicted >= rule.yellow_at * capacity else predicted  # as the level engine
        if not zone.armed:
            if upper < (rule.red_at - rule.clear_margin) * capacity and level != "red":
                zone.clear_since = zone.clear_since or now
                if now - zone.clear_since >= timedelta(seconds=rule.dwell_s):
                    zone.armed, zone.clear_since = True, None
            else:
                zone.clear_since = None
            return None
        if level not in ("green", "yellow") or upper < rule.red_at * capacity or predicted <= occupancy:
            return None
        zone.armed = False
        minutes = int(self.horizon.total_seconds() // 60)
        return EarlyWarning(zone_id, round(predicted), capacity, minutes, occupancy, now, band)


@dataclass(frozen=True)
class Score:
    """How well warnings foretold red: each red entry warned or not, each warning true or false."""

    reds: int
    warned: int
    lead_min: list[float]  # per warned red entry: minutes between the warning and red
    warnings: int
    false: int  # warnings not followed by red within the horizon and a grace period

    def lines(self) -> list[str]:
        leads = sorted(self.lead_min) or [float("nan")]
        median = leads[len(leads) // 2]
        return [
            f"red entries {self.reds}, warned before {self.warned} ({self.warned / max(1, self.reds):.0%})",
            f"lead time: median {median:.0f} min, range {leads[0]:.0f}-{leads[-1]:.0f} min",
            f"warnings {self.warnings}, false alarms {self.false} ({self.false / max(1, self.warnings):.0%})",
        ]


def score(
    reds: list[tuple[str, datetime]], warnings: list[tuple[str, datetime]], horizon_min: int = 15, grace_min: int = 15
) -> Score:
    """Match warnings to red entries of the same zone: a warning counts if red follows within
    the horizon plus ``grace_min``; a red entry counts as warned if such a warning came before it."""
    window = timedelta(minutes=horizon_min + grace_min)
    leads = []
    for zone, red in reds:
        before = [w for z, w in warnings if z == zone and red - window <= w <= red]
        if before:
            leads.append((red - min(before)).total_seconds() / 60)
    false = sum(1 for z, w in warnings if not any(zone == z and w <= red <= w + window for zone, red in reds))
    return Score(len(reds), len(leads), leads, len(warnings), false)
