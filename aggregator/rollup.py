"""Zone occupancy at every level of the hierarchy, from the devices' cumulative line totals.

Each counting line contributes its net flow (in - out) since the aggregator first saw it. A count
window moves the line's contribution to its new cumulative totals, so a duplicate, a replay or an
older window changes nothing, and a lost window is made up by the next one. Each entrance adds its
lines' contributions to every zone it is a boundary of (``Site.boundary_entrances``: +1 where ``in``
enters the zone, -1 where it leaves it), which makes a parent's occupancy the sum of its children's.

Devices are not trusted with their totals: a window whose totals moved further than the entrance can
pass people in the time since the line's last window (by the data's clock or, when a device's clock
stepped back and its windows were too old to apply meanwhile, by this one's), or moved back, is
refused whole (``ImplausibleTotalsError``) and changes nothing. After a reboot (a new boot id) such
totals are a new counter (a replaced device, lost state): only the window's own counts are taken.
Within one boot, when the next window agrees with the refused one, the counter really moved on: it is
followed from there, again taking only that window's own counts. Either way no single message can
move a zone by more than one window's (validated) counts.

Counters err, so the occupancy in use is the corrected one: each line's counts times its factors
(``aggregator.drift``, learned every night from the zones being empty at closing); the plain sum is
kept beside it (``uncorrected``). Drift is also corrected on purpose, and every such correction of the
occupancy in use is recorded (measurement ``corrections``):
- an occupancy below 0 is clamped to 0 (people who entered before the counting started, or a miscount);
- at the site's closing time every zone is reset to 0, after the day's counts taught the factors;
- a staff headcount re-anchors its zone (``anchor``), weighed against the estimate's band;
- a device counting far from its usual share for two hours has its counts scaled back to it, every hour
  since it last counted as usual made up (``aggregator.drift.HourlyShares``; reason ``share``); its
  zones' band grows by the scale's doubt and by the people its lens did not see.

All state lives in ``line_state`` and ``zones`` points written with the same batch as the data that
changed it, so ``restore`` after a crash (or on a new machine) continues exactly where the stored
data ends; messages not yet stored are redelivered by the broker and applied again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional
from zoneinfo import ZoneInfo

from aggregator import points
from aggregator.config import DriftConfig, ValidationConfig
from aggregator.drift import CountingFactors, Key, Night, Rescale
from aggregator.validation import FLOW_SLACK, InvalidMessageError, max_flow
from aggregator.views import ViewEstimate
from lanewatch import contract
from lanewatch.site.model import Site

INFLOW_WINDOW = timedelta(minutes=1)
VIEW_RECORD_SHARE = 0.02  # a view's pull on a zone is recorded when it moved by this share of its capacity
#: a headcount measures the counts' common scale only in a zone that gained at least this many people since its anchor
MIN_GAINED = 50


@dataclass
class LineState:
    boot_id: str
    time: datetime  # end of the latest window applied
    total_in: int
    total_out: int
    net: int  # people in minus out across this line since it was first seen


class ImplausibleTotalsError(InvalidMessageError):
    """A window whose cumulative totals cannot be true; the text says why, for the dead letter."""


@dataclass(frozen=True)
class ZoneState:
    zone: str
    occupancy: int  # corrected (the one levels are judged on)
    raw: int
    capacity: int
    density: Optional[float]
    time: Optional[datetime]
    inflow_per_min: float = 0.0  # people who entered in the last minute (data time)
    uncorrected: Optional[int] = None  # the plain running sum of in - out, clamped and reset like occupancy
    band: int = 0  # how far off occupancy may be (one standard deviation, people)
    measured: bool = False  # the band's rate was measured by nights (not the default guess)
    flow: Optional[int] = None  # the occupancy by the counting lines alone, before the views
    view: Optional[int] = None  # what the cameras' views say (None without a fresh one)


class RollUp:
    def __init__(
        self,
        site: Site,
        validation: Optional[ValidationConfig] = None,
        clock: Callable[[], float] = time.monotonic,
        drift: Optional[DriftConfig] = None,
    ) -> None:
        self.site = site
        self.site_id = site.site.id
        limits = validation or ValidationConfig()
        self._flow = {e.id: max_flow(limits, e) for e in site.entrances}  # people/s each entrance can pass
        self._suspects: dict[tuple[str, str], LineState] = {}  # the last refused totals of each line
        self._clock = clock
        self._applied_at: dict[tuple[str, str], float] = {}  # when (this clock) each line last moved
        self.effects: dict[str, list[tuple[str, int]]] = {e.id: [] for e in site.entrances}
        for zone in site.zones:
            for entrance, sign in site.boundary_entrances(zone.id):
                self.effects[entrance.id].append((zone.id, sign))
        self.lines: dict[tuple[str, str], LineState] = {}
        self.raw = {z.id: 0 for z in site.zones}
        self.baseline = {z.id: 0 for z in site.zones}
        drift = drift or DriftConfig()
        self._headcount_sd, self._headcount_age_s = drift.headcount_sd, drift.headcount_age_s
        self._views = drift.enabled and drift.views
        self._view_shift: dict[str, float] = {}  # how far the views moved each zone, as last recorded
        self.factors = CountingFactors(site, drift)
        self._corrects = drift.enabled
        self.estimate = {z.id: 0.0 for z in site.zones}  # the occupancy in use: counts times factors
        self.crossed = {z.id: 0 for z in site.zones}  # people counted across the boundary since the last anchor
        self.anchor_var = {z.id: 0.0 for z in site.zones}  # the estimate's variance left by that anchor
        self.anchored = {z.id: 0.0 for z in site.zones}  # the estimate that anchor left (0 at closing)
        self.day: dict[Key, tuple[int, int]] = {}  # each line's counts since the last closing
        #: per zone, what each device with a live scale added since the scale began or the zone's last anchor: the
        #: people (signed for the zone) and the variance of their counting. A scale set from the device's usual
        #: share is only as sure as that share; and a lens that sees half the people says nothing of the others
        self.scaled: dict[str, dict[str, list[float]]] = {z.id: {} for z in site.zones}
        #: each device's people (in - out, as applied), crossings counted and the live scale they were applied at,
        #: in each hour since closing, the current one last
        self._hours: dict[str, deque[list[float]]] = {d.id: deque([[0.0, 0.0, 1.0]], maxlen=25) for d in site.devices}
        self._entrance_of = {d.id: d.entrance for d in site.devices}
        self.nights: list[Night] = []  # learned and not yet taken (ZoneWatch tells the technicians)
        self.zone_time: dict[str, Optional[datetime]] = {z.id: None for z in site.zones}
        self._dirty_zones: set[str] = set()
        self._entering: dict[str, deque[tuple[datetime, int]]] = {z.id: deque() for z in site.zones}
        self._dirty_lines: set[tuple[str, str]] = set()
        self._corrections: list[str] = []
        self._tz = ZoneInfo(site.site.timezone)
        self._closing: Optional[tuple[int, int]] = None
        if site.site.closing_time:
            hours, minutes = site.site.closing_time.split(":")
            self._closing = (int(hours), int(minutes))
        self._next_closing: Optional[datetime] = None

    # --- reading -------------------------------------------------------------------------------

    def occupancy(self, zone_id: str, viewed: Optional[dict[str, tuple[float, float, ViewEstimate]]] = None) -> int:
        """The occupancy in use: corrected by the learned factors (when enabled), moved toward what the
        views of its third-level zones see (``viewed``: ``self.viewed()``, when already at hand)."""
        viewed = self.viewed() if viewed is None else viewed
        shift = sum(v[0] for leaf, v in viewed.items() if leaf == zone_id or self.site.contains(zone_id, leaf))
        if shift < 0:  # views lower the estimate to 0 at most
            shift = min(0.0, max(shift, -self.estimate[zone_id]))
        return round(self.estimate[zone_id] + shift)

    def band(self, zone_id: str, viewed: Optional[dict[str, tuple[float, float, ViewEstimate]]] = None) -> int:
        """How far off the occupancy may be (one standard deviation): the counted occupancy's band, narrowed
        where views see the zone."""
        viewed = self.viewed() if viewed is None else viewed
        return round(viewed[zone_id][1] ** 0.5) if zone_id in viewed else round(self._flow_var(zone_id) ** 0.5)

    def _flow_var(self, zone_id: str, scale: bool = True) -> float:
        """The counted occupancy's variance: it grows with the people counted across the zone's boundary
        since its last anchor (closing, a headcount), at the rate the nights measured; and with the people it
        gained since, by the counters' common scale (``scale_sd``), which no night can measure: counting all
        people 10 % short still leaves every zone empty at closing, and a full zone 10 % low. Counters whose
        nights close to within a person are exact: they have no scale to doubt. ``scale=False``: the anchor's and
        the balance's part alone."""
        spread = self.factors.error_rate(zone_id) * self.crossed[zone_id]
        variance = self.anchor_var[zone_id] + spread**2 + self._scaled_var(zone_id)
        if scale and spread >= 1.0 and self.factors.measured(zone_id):
            variance += (self.factors.scale_sd() * (self.estimate[zone_id] - self.anchored[zone_id])) ** 2
        return variance

    def _scaled_var(self, zone_id: str) -> float:
        """The variance the live scales of dirty devices around the zone add: each scale's doubt times the people
        it added, and the people its lens missed (a count ``c`` scaled by ``s`` stands for ``s c`` people, give or
        take ``s (s - 1) c``, binomially)."""
        hourly = self.factors.hourly
        return sum(
            (hourly.doubt(device) * people) ** 2 + noise for device, (people, noise) in self.scaled[zone_id].items()
        )

    def viewed(self) -> dict[str, tuple[float, float, ViewEstimate]]:
        """Per third-level zone its views see: how far they move the counted occupancy, the variance left,
        and what they see (``aggregator.views``). Only once nights have measured how far the counted
        occupancy strays: before, its band is a guess and the views' scale unlearned."""
        out: dict[str, tuple[float, float, ViewEstimate]] = {}
        if not self._views:
            return out
        views, skip = self.factors.views, self._unviewed()
        for zone_id in views.of_zone:
            if not self.factors.measured(zone_id):
                continue
            seen = views.estimate(zone_id, self.zone_time[zone_id], skip)
            if seen is None:
                continue
            flow_var, off = self._flow_var(zone_id), seen.occupancy - self.estimate[zone_id]
            if flow_var < 4.0:  # sure to within a couple of people (exact counters, a fresh anchor): left alone
                continue
            gain = flow_var / (flow_var + seen.variance)
            out[zone_id] = (gain * off, (1 - gain) * flow_var, seen)
        return out

    def _unviewed(self) -> set[str]:
        """Devices whose views are not to be believed now: those counting far off their usual share."""
        return self.factors.flagged | set(self.factors.hourly.scale)

    def uncorrected(self, zone_id: str) -> int:
        """The plain running sum of in - out since the last reset, never below 0."""
        return self.raw[zone_id] - self.baseline[zone_id]

    def inflow_per_min(self, zone_id: str) -> float:
        """People who walked into the zone during the minute before its latest data."""
        entering, latest = self._entering[zone_id], self.zone_time[zone_id]
        if latest is None:
            return 0.0
        while entering and entering[0][0] <= latest - INFLOW_WINDOW:
            entering.popleft()
        return float(sum(n for when, n in entering if when <= latest))

    def zones(self) -> list[ZoneState]:
        out, viewed = [], self.viewed()
        for zone in self.site.zones:
            occupancy = self.occupancy(zone.id, viewed)
            density = occupancy / zone.area_m2 if zone.area_m2 else None
            view = viewed.get(zone.id)
            out.append(
                ZoneState(
                    zone.id,
                    occupancy,
                    self.raw[zone.id],
                    zone.capacity,
                    density,
                    self.zone_time[zone.id],
                    self.inflow_per_min(zone.id),
                    self.uncorrected(zone.id),
                    self.band(zone.id, viewed),
                    self.factors.measured(zone.id),
                    round(self.estimate[zone.id]),
                    round(view[2].occupancy) if view else None,
                )
            )
        return out

    # --- applying count windows ------------------------------------------------------------------

    def apply(self, window: contract.CountWindow, entrance_id: str) -> bool:
        """Move the line to this window's totals; False when the window is not newer than what is known.

        ImplausibleTotalsError, with nothing changed, when its totals cannot be true."""
        key = (window.device, window.line)
        old = self.lines.get(key)
        stale = old is not None and window.window_end <= old.time
        counted = None if stale else self._counted(key, old, window, entrance_id)
        self._maybe_close(window.window_end)
        if counted is None:
            return False
        came, went = counted
        net = (old.net if old else 0) + came - went
        self.lines[key] = LineState(window.boot_id, window.window_end, window.total_in, window.total_out, net)
        self._applied_at[key] = self._clock()
        self._dirty_lines.add(key)
        day_in, day_out = self.day.get(key, (0, 0))
        self.day[key] = (day_in + came, day_out + went)
        factor_in, factor_out = self.factors.factor(key) if self._corrects else (1.0, 1.0)
        verdicts = self.factors.hourly.add(window.device, window.window_end, came, went)
        if verdicts is not None:
            self._rescale(verdicts, window.window_end)
        scale = self.factors.hourly.factor(window.device) if self._corrects else 1.0
        people = scale * (factor_in * came - factor_out * went)
        if window.device in self._hours:
            hour = self._hours[window.device][-1]
            hour[0], hour[1], hour[2] = hour[0] + people, hour[1] + came + went, scale
        live = scale != 1.0
        self._see(window)
        for zone_id, sign in self.effects[entrance_id]:
            entering = window.in_ if sign > 0 else window.out
            if entering:
                self._entering[zone_id].append((window.window_end, entering))
            self.raw[zone_id] += sign * (came - went)
            self.crossed[zone_id] += round(scale * (came + went))  # people: a dirty lens counts but some
            self.estimate[zone_id] += sign * people
            if live:
                added = self.scaled[zone_id].setdefault(window.device, [0.0, 0.0])
                added[0], added[1] = added[0] + sign * people, added[1] + _missed_var(scale, came + went)
            self._touch(zone_id, window.window_end)
            if self.uncorrected(zone_id) < 0:
                self.baseline[zone_id] = self.raw[zone_id]
            if self.estimate[zone_id] < 0:
                self._correct(zone_id, "clamp", -self.estimate[zone_id], window.window_end)
        return True

    def _see(self, window: contract.CountWindow) -> None:
        """The window's people in view; while the counted occupancy of the view's zone is sure, the view
        learns its scale from it."""
        views = self.factors.views
        zone_id = views.zone_of.get(window.device)
        if zone_id is None:
            return
        views.observe(window.device, window.window_end, window.in_view)
        doubted = window.device in self.factors.flagged or window.device in self.factors.hourly.scale
        if self._corrects and self.factors.measured(zone_id) and not doubted:  # not _unviewed(): no set a window
            band, capacity = self._flow_var(zone_id) ** 0.5, self.site.zone(zone_id).capacity
            crossed = self.crossed[zone_id]
            views.learn(window.device, self.estimate[zone_id], band, crossed, window.window_end, capacity)

    def _rescale(self, verdicts: list[Rescale], when: datetime) -> None:
        """A new hour: each device's counts scaled as the hour's shares said, its last hours made up."""
        for verdict in verdicts if self._corrects else []:
            made_up = list(self._hours.get(verdict.device, ()))[-verdict.hours :]
            people = sum((verdict.new / scale - 1) * counted for counted, _crossings, scale in made_up)
            #: of the people at a live scale (made-up hours included): how many more, and how much more doubt
            live = sum(verdict.new / scale * counted - (scale != 1.0) * counted for counted, _c, scale in made_up)
            noise = sum(
                _missed_var(verdict.new, crossings) - _missed_var(scale, crossings) for _p, crossings, scale in made_up
            )
            for hour in made_up:
                hour[0], hour[2] = hour[0] * verdict.new / hour[2], verdict.new
            for zone_id, sign in self.effects[self._entrance_of[verdict.device]]:
                if sign * people:
                    self._correct(zone_id, "share", max(sign * people, -self.estimate[zone_id]), when)
                self._scaled_by(zone_id, verdict, sign * live, noise)
        for hours in self._hours.values():
            hours.append([0.0, 0.0, 1.0])

    def _scaled_by(self, zone_id: str, verdict: Rescale, people: float, noise: float) -> None:
        """Keep what a live scale added to the zone: ``people`` more at a live scale (signed for the zone) and
        ``noise`` more variance; a scale that ends leaves its doubt in the zone's band until the next anchor."""
        scaled = self.scaled[zone_id]
        if verdict.new == 1.0:
            people, noise = scaled.pop(verdict.device, (0.0, 0.0))
            self.anchor_var[zone_id] += (self.factors.hourly.doubt(verdict.device) * people) ** 2 + noise
            return
        added = scaled.setdefault(verdict.device, [0.0, 0.0])
        added[0], added[1] = added[0] + people, added[1] + noise

    def _counted(
        self, key: tuple[str, str], old: Optional[LineState], window: contract.CountWindow, entrance: str
    ) -> tuple[int, int]:
        """The people counted in and out since the line's last window; ImplausibleTotalsError when its
        totals cannot be true."""
        own = (window.in_, window.out)
        if old is None:  # first sight: the line counts from this window on
            return own
        now = self._clock()
        moved = self._moved(old, window, entrance, now - self._applied_at.get(key, now))
        if moved is None:
            self._suspects.pop(key, None)
            return window.total_in - old.total_in, window.total_out - old.total_out
        suspect = self._suspects.pop(key, None)
        if window.boot_id != old.boot_id:  # a new counter: only this window's own counts
            return own
        if suspect is not None and window.window_end > suspect.time and self._moved(suspect, window, entrance) is None:
            return own  # the counter moved on and stays there: followed from here
        self._suspects[key] = LineState(window.boot_id, window.window_end, window.total_in, window.total_out, old.net)
        raise ImplausibleTotalsError(f"line {window.line}: {moved}; not counted (check the counter)")

    def _moved(
        self, since: LineState, window: contract.CountWindow, entrance: str, waited: float = 0.0
    ) -> Optional[str]:
        """None when the totals moved as far as people can walk through ``entrance`` since ``since`` (by the
        windows' times, or the ``waited`` seconds here); else what is wrong with them."""
        moved_in, moved_out = window.total_in - since.total_in, window.total_out - since.total_out
        seconds = max((window.window_end - since.time).total_seconds(),
                      (window.window_end - window.window_start).total_seconds(), waited)  # fmt: skip
        if moved_in < 0 or moved_out < 0:
            return f"the totals went back ({moved_in:+d} in, {moved_out:+d} out) within one boot"
        most = self._flow[entrance] * seconds + FLOW_SLACK
        if moved_in + moved_out > most:
            return (f"the totals moved by {moved_in:+d} in, {moved_out:+d} out in {seconds:g} s, more than the "
                    f"{most:.0f} people entrance {entrance} can pass in that time")  # fmt: skip
        return None

    def _touch(self, zone_id: str, when: datetime) -> None:
        current = self.zone_time[zone_id]
        self.zone_time[zone_id] = when if current is None or when > current else current
        self._dirty_zones.add(zone_id)

    def _correct(self, zone_id: str, reason: str, delta: float, when: datetime) -> None:
        """Move the occupancy in use by ``delta`` people, on purpose and on the record."""
        before = self.occupancy(zone_id)
        self.estimate[zone_id] += delta
        self._touch(zone_id, when)
        self._corrections.append(points.correction(self.site_id, zone_id, reason, round(delta), before, when))

    def _maybe_close(self, when: datetime) -> None:
        """At the first window past closing time, every zone is reset to 0 (recorded)."""
        if self._closing is None:
            return
        if self._next_closing is None:
            self._next_closing = self._closing_after(when)
            return
        if when <= self._next_closing:  # a window ending at closing time is still the day's
            return
        closed_at = self._next_closing
        night = self.factors.learn(self.day, closed_at)
        self.factors.hourly.close_day()
        self.nights.append(night)
        self._corrections.extend(points.night(self.site_id, night, self.factors.dumps()))
        self.day = {}
        for hours in self._hours.values():
            hours.clear()
            hours.append([0.0, 0.0, 1.0])
        for zone in self.site.zones:
            if self.estimate[zone.id] != 0:
                self._correct(zone.id, "closing", -self.estimate[zone.id], closed_at)
            self.baseline[zone.id] = self.raw[zone.id]
            self.crossed[zone.id], self.anchor_var[zone.id], self.anchored[zone.id] = 0, 0.0, 0.0
            self.scaled[zone.id] = {}
        self._view_shift.clear()  # the closing reset took the views' pull with it
        self._next_closing = self._closing_after(when)

    def anchor(self, count: contract.Headcount) -> str:
        """A staff headcount re-anchors its (third-level) zone: weighed against the estimate by how sure each
        is, the difference moves the zone and every zone holding it, on the record; the band shrinks to what
        is left. What was done, in words; InvalidMessageError when the count is far from the zone's data."""
        zone, latest = count.zone, self.zone_time[count.zone]
        if latest is not None and abs((count.time - latest).total_seconds()) > self._headcount_age_s:
            raise InvalidMessageError(
                f"counted at {count.time:%Y-%m-%d %H:%M}Z, but {zone}'s data is at {latest:%Y-%m-%d %H:%M}Z: "
                "a headcount anchors the zone only at the time of its data"
            )
        estimate_var, balance_var = self._flow_var(zone), self._flow_var(zone, scale=False)
        count_var = (self._headcount_sd * count.count) ** 2 + 1.0
        gained = self.estimate[zone] - self.anchored[zone]
        if abs(gained) >= MIN_GAINED and estimate_var > balance_var:  # the scale is in doubt: measure it
            self.factors.scale_seen(count.count - self.estimate[zone], gained, balance_var + count_var)
        gain = estimate_var / (estimate_var + count_var)
        delta = gain * (count.count - self.estimate[zone])
        when = max(count.time, latest) if latest is not None else count.time
        for holder in self.site.zones:
            if self.site.contains(holder.id, zone):
                before = self.occupancy(holder.id)
                self.estimate[holder.id] = max(0.0, self.estimate[holder.id] + delta)
                self._touch(holder.id, when)
                self._corrections.append(points.correction(self.site_id, holder.id, "headcount", round(delta), before,
                                                           when, by=count.person, observed=count.count))  # fmt: skip
        self.crossed[zone], self.anchor_var[zone] = 0, (1 - gain) * estimate_var
        self.anchored[zone], self.scaled[zone] = self.estimate[zone], {}
        self.factors.headcount(zone, self.day, count.count)  # tonight, it teaches the factors their scale
        self.factors.views.headcount(zone, count.count, when)  # and the zone's views theirs, now
        return f"{zone}: counted {count.count} by {count.person}, estimate moved by {delta:+.0f} (weight {gain:.2f})"

    def take_nights(self) -> list[Night]:
        """The nights learned since the last call (their points go with ``take_points``)."""
        nights, self.nights = self.nights, []
        return nights

    def _closing_after(self, when: datetime) -> datetime:
        assert self._closing is not None
        local = when.astimezone(self._tz)
        closing = local.replace(hour=self._closing[0], minute=self._closing[1], second=0, microsecond=0)
        if closing <= local:
            closing = (closing + timedelta(days=1)).replace(hour=self._closing[0], minute=self._closing[1])
        return closing.astimezone(timezone.utc)

    # --- persistence -------------------------------------------------------------------------------

    def take_points(self) -> list[str]:
        """Line protocol for what changed since the last call: zones, lines and corrections."""
        out = self._corrections
        self._corrections = []
        viewed = self.viewed() if self._dirty_zones else {}
        self._record_views(viewed)
        for zone in self.site.zones:
            if zone.id in self._dirty_zones:
                when = self.zone_time[zone.id]
                assert when is not None
                view = viewed.get(zone.id)
                out.append(
                    points.zone(
                        self.site_id,
                        zone.id,
                        zone.kind,
                        self.occupancy(zone.id, viewed),
                        self.raw[zone.id],
                        self.uncorrected(zone.id),
                        self.band(zone.id, viewed),
                        self.crossed[zone.id],
                        zone.capacity,
                        zone.area_m2,
                        when,
                        flow=(round(self.estimate[zone.id]), round(self._flow_var(zone.id) ** 0.5)),
                        view=round(view[2].occupancy) if view else None,
                    )
                )
        for key in sorted(self._dirty_lines):
            state = self.lines[key]
            out.append(points.line_state(self.site_id, *key, state.total_in, state.total_out, state.net,
                                         state.boot_id, state.time, self.day.get(key, (0, 0))))  # fmt: skip
        self._dirty_zones.clear()
        self._dirty_lines.clear()
        return out

    def _record_views(self, viewed: dict[str, tuple[float, float, ViewEstimate]]) -> None:
        """Keep on the record (``corrections``, reason ``view``) how far the views move each zone, whenever
        that changed by ``VIEW_RECORD_SHARE`` of its capacity: by which cameras, and what they saw."""
        for zone_id in self.factors.views.of_zone:
            view = viewed.get(zone_id)
            shift, last = (view[0] if view else 0.0), self._view_shift.get(zone_id, 0.0)
            capacity, when = self.site.zone(zone_id).capacity, self.zone_time[zone_id]
            if when is None or abs(shift - last) < max(5.0, VIEW_RECORD_SHARE * capacity):
                continue
            self._view_shift[zone_id] = shift
            before = round(self.estimate[zone_id] + last)
            by, observed = (",".join(view[2].devices), round(view[2].occupancy)) if view else ("", -1)
            delta = round(shift - last)
            self._corrections.append(
                points.correction(self.site_id, zone_id, "view", delta, before, when, by, observed)
            )

    def restore(
        self,
        lines: dict[tuple[str, str], LineState],
        occupancy: dict[str, tuple[int, Optional[int], datetime]],
        day: Optional[dict[Key, tuple[int, int]]] = None,
        bands: Optional[dict[str, tuple[int, int]]] = None,
    ) -> None:
        """Continue from stored state: the lines' contributions, each zone's last occupancy (in use, and
        uncorrected: None when stored before it was kept) and the lines' counts of the day (as stored with
        the lines, so only those stored since the last closing are today's) and each zone's band with the
        crossings it grew from. The factors restore apart (and first: the band's rate is theirs)."""
        devices = {d.id: d.entrance for d in self.site.devices}
        self.lines = {key: state for key, state in lines.items() if key[0] in devices}
        self.raw = {z.id: 0 for z in self.site.zones}
        for (device, _line), state in self.lines.items():
            for zone_id, sign in self.effects[devices[device]]:
                self.raw[zone_id] += sign * state.net
        for zone in self.site.zones:
            stored, plain, when = occupancy.get(zone.id, (self.raw[zone.id], None, None))
            self.estimate[zone.id] = float(stored)
            self.baseline[zone.id] = self.raw[zone.id] - (stored if plain is None else plain)
            self.zone_time[zone.id] = when
            band, crossed = (bands or {}).get(zone.id, (0, 0))
            # the gain since an anchor counts from 0 (a headcount's estimate is not stored): a band no narrower
            self.crossed[zone.id], self.anchor_var[zone.id], self.anchored[zone.id] = crossed, 0.0, 0.0
            self.anchor_var[zone.id] = max(0.0, band**2 - self._flow_var(zone.id))
        latest = [t for t in self.zone_time.values() if t is not None]
        self._next_closing = self._closing_after(max(latest)) if latest and self._closing else None
        opened = self._next_closing - timedelta(days=1) if self._next_closing else None
        self.day = {
            key: counts
            for key, counts in (day or {}).items()
            if key in self.lines and (opened is None or self.lines[key].time > opened)
        }


def _missed_var(scale: float, counted: float) -> float:
    """The variance of the people ``counted`` crossings stand for at a live ``scale``: a lens that counts one
    person in ``scale`` misses the others at random."""
    return counted * scale * (scale - 1) if scale > 1 else 0.0
