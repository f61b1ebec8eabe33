"""People in view: cameras that see part of a zone anchor its occupancy live.

A zone's occupancy from the counting lines is a running sum, and its error grows with every person
who crosses the boundary: by mid-afternoon a narrow lane with twenty thousand crossings a day can be
off by a fifth of its capacity, in either direction, whatever the nightly factors learned. A camera
that sees part of the zone (``view`` in the inventory) reports ``in_view``, the people inside its
region of interest now: about ``share`` of the zone's people. That does not drift. It is noisy (a
few dozen people), and its scale is only roughly known (people gather at a shop front, not evenly),
so it is weighed against the running sum by how sure each is:

- each view's scale (people seen per person in the zone) starts at the inventory's ``share``, give or
  take ``view_share_sd``, and is learned from the moments the running sum is sure (in the morning,
  while fewer than ``view_trust`` times the capacity have crossed since closing) and from staff
  headcounts; the evidence of older days fades (``VIEW_FADE`` a night), so a moved camera is relearned;
- ``in_view`` is smoothed over ``VIEW_SMOOTH_S`` (one frame's count is a handful of people);
- each zone's views give one estimate, ``y / scale`` per view, combined by their variances: the scale's
  uncertainty, ``view_sd`` (how far a view's share strays from its usual within a day) and the counting
  noise of a few dozen people;
- the occupancy in use is the running sum moved toward that estimate by the usual weights of two
  measurements: variance of the sum (its band squared) over both variances. A sum just anchored
  (closing, a headcount), or exact (nights that measured no drift), is left as it is;
- a view is left out while its device is flagged as counting off its usual share (the dirty lens that
  misses people on the line misses them in view too), when its data is older than ``VIEW_STALE_S``,
  and while it disagrees with the running sum beyond ``gate`` standard deviations of both.

The running sum itself is not moved: views are blended in when occupancy is read, so that a view lost
mid-day gives back the plain (corrected) sum rather than an anchor that is no longer kept. Each zone's
``flow`` (the sum before the views) and ``view`` (the views' estimate) are stored beside its occupancy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from aggregator.config import DriftConfig
from lanewatch.site.model import Site

VIEW_SMOOTH_S = 120.0  # time constant of the smoothing of in_view
VIEW_STALE_S = 300.0  # a view older than this (data time) against its zone's latest data is not used
VIEW_CORRELATION_S = 1800.0  # a view's share wanders slowly: minutes this far apart are independent evidence
VIEW_FADE = 0.7  # the share of the learned evidence kept at each closing


@dataclass
class _Seen:
    time: datetime
    smoothed: float  # in_view, smoothed
    noise: float  # the smoothed count's counting noise (variance): a count of n people is give or take sqrt(n)
    learned_at: Optional[datetime] = None  # when its scale last learned from the running sum


@dataclass
class _Scale:
    """A view's scale as a log-normal belief: the prior's precision plus what the data added."""

    precision: float = 0.0  # the evidence's (the prior's is added when read)
    weighted: float = 0.0  # sum of precision * log(observed scale)


@dataclass(frozen=True)
class ViewEstimate:
    """What a zone's views say its occupancy is, and how sure (variance, people squared)."""

    occupancy: float
    variance: float
    devices: tuple[str, ...]


class ViewAnchors:
    """Every view's latest smoothed ``in_view`` and learned scale; the estimate each zone's views give."""

    def __init__(self, site: Site, config: DriftConfig) -> None:
        self.config = config
        self.share = {d.id: d.view.share for d in site.devices if d.view is not None}
        self.zone_of = {d.id: d.view.zone for d in site.devices if d.view is not None}
        self.of_zone: dict[str, list[str]] = {}
        for device, zone in self.zone_of.items():
            self.of_zone.setdefault(zone, []).append(device)
        self.seen: dict[str, _Seen] = {}
        self.scales = {device: _Scale() for device in self.share}

    def observe(self, device: str, when: datetime, in_view: int) -> None:
        """A window's ``in_view`` (people in the region of interest at its end)."""
        if device not in self.share:
            return
        seen = self.seen.get(device)
        if seen is None or when <= seen.time:
            if seen is None:
                self.seen[device] = _Seen(when, float(in_view), max(1.0, in_view))
            return
        step = 1.0 - math.exp(-(when - seen.time).total_seconds() / VIEW_SMOOTH_S)
        seen.smoothed += step * (in_view - seen.smoothed)
        seen.noise = (1 - step) ** 2 * seen.noise + step**2 * max(1.0, in_view)
        seen.time = when

    def scale(self, device: str) -> tuple[float, float]:
        """The view's scale (people seen per person in its zone) and its relative standard deviation."""
        prior = 1.0 / self.config.view_share_sd**2
        belief = self.scales[device]
        precision = prior + belief.precision
        log_scale = (prior * math.log(self.share[device]) + belief.weighted) / precision
        return math.exp(log_scale), precision**-0.5

    def estimate(self, zone: str, now: Optional[datetime], skip: set[str]) -> Optional[ViewEstimate]:
        """The zone's occupancy by its fresh, measured views (not those in ``skip``); None without one. Of
        three views or more, one far from what the others see is left out (a crowd around a street show)."""
        if now is None:
            return None
        seen: dict[str, tuple[float, float]] = {}
        for device in self.of_zone.get(zone, ()):
            view = self.seen.get(device)
            if device in skip or view is None or (now - view.time).total_seconds() > VIEW_STALE_S:
                continue
            if self.scales[device].precision <= 0:  # not measured yet: the inventory's share is too rough
                continue
            scale, scale_sd = self.scale(device)
            people = view.smoothed / scale
            # the scale's doubt and the view's wandering share, then the counting noise of the smoothed count
            seen[device] = (people, people**2 * (scale_sd**2 + self.config.view_sd**2) + view.noise / scale**2 + 1.0)
        if len(seen) > 2:
            for device, (people, variance) in list(seen.items()):
                others = _combine([v for d, v in seen.items() if d != device])
                if (people - others[0]) ** 2 > self.config.gate**2 * (variance + others[1]):
                    del seen[device]
        if not seen:
            return None
        occupancy, variance = _combine(list(seen.values()))
        return ViewEstimate(occupancy, variance, tuple(seen))

    def learn(self, device: str, flow: float, band: float, crossed: int, when: datetime, capacity: int) -> None:
        """Learn the view's scale from the running sum while it is sure of it: ``flow`` people, give or take
        ``band``, with ``crossed`` people counted across the boundary since its last anchor, at ``when``;
        each stretch of ``VIEW_CORRELATION_S`` counts as one observation. Only while few have crossed
        (``view_trust`` times the zone's capacity): the sum's own error grows with every crossing, and a
        view taught by a drifted sum would only repeat the drift."""
        seen = self.seen.get(device)
        if seen is None or seen.smoothed <= 0 or flow < max(20.0, 0.05 * capacity):
            return
        if crossed > self.config.view_trust * capacity:
            return
        since = seen.learned_at
        weight = 1.0 if since is None else min(1.0, (when - since).total_seconds() / VIEW_CORRELATION_S)
        if weight <= 0:
            return
        seen.learned_at = when
        self._add(device, seen.smoothed / flow, (band / flow) ** 2 + 1.0 / seen.smoothed, weight)

    def headcount(self, zone: str, count: int, when: datetime) -> None:
        """A staff headcount is the surest measure of every view of its zone at that moment."""
        for device in self.of_zone.get(zone, ()):
            seen = self.seen.get(device)
            if seen is None or count <= 0 or seen.smoothed <= 0 or (when - seen.time).total_seconds() > VIEW_STALE_S:
                continue
            self._add(device, seen.smoothed / count, self.config.headcount_sd**2 + 1.0 / seen.smoothed, 1.0)

    def _add(self, device: str, observed: float, variance: float, weight: float) -> None:
        """One observation of a view's scale: its own doubt plus the view's wandering share."""
        belief = self.scales[device]
        precision = weight / (variance + self.config.view_sd**2)
        belief.precision += precision
        belief.weighted += precision * math.log(observed)

    def close_day(self) -> None:
        """Older days' evidence fades: a camera moved or re-aimed is relearned within days."""
        for belief in self.scales.values():
            belief.precision *= VIEW_FADE
            belief.weighted *= VIEW_FADE
        for seen in self.seen.values():
            seen.learned_at = None

    def state(self) -> dict[str, list[float]]:
        return {device: [b.precision, b.weighted] for device, b in self.scales.items()}

    def restore(self, state: dict[str, list[float]]) -> None:
        for device, (precision, weighted) in state.items():
            if device in self.scales:
                self.scales[device] = _Scale(float(precision), float(weighted))


def _combine(estimates: list[tuple[float, float]]) -> tuple[float, float]:
    """Independent estimates (value, variance) weighed by how sure each is: the combined value and variance."""
    precision = sum(1.0 / variance for _value, variance in estimates)
    return sum(value / variance for value, variance in estimates) / precision, 1.0 / precision
