"""Counting factors learned from the nights: how many people each line's ``in`` and ``out`` stand for.

No counter is exact, and a zone's occupancy is the running sum of in - out over its boundary, so
small differences between how well a line counts each direction add up over a day. What the site
knows for certain is that every zone is empty after closing (the nightly reset relies on it): each
third-level zone's day gives one equation, sum over its boundary lines of sign * (f_in * in -
f_out * out) = 0, where ``f`` are the factors that turn counts into people. Six zones give six
equations a night for two factors per line; the nights add up, and a prior (every factor near
``prior``, give or take ``prior_sd``; or one over a line's rates the technician measured at install,
as sure as the hand count was) holds what the nights cannot tell, above all the common scale
(counting every line 5 % short leaves every zone empty at night): absolute anchors tell that.

The factors are learned with a Kalman filter over all of them at once (each factor a random walk of
``night_sd`` per night; each zone's equation a measurement whose noise grows with its crossings),
so that one night's evidence counts as much as it should and no more; they stay within ``bounds``.
One odd day must not ruin them:

- a device whose day's crossings, set against those of the other devices around the same zones,
  fall below ``flag_share`` of its usual (the median of its last week's days), or rise above the
  inverse, is flagged to the technicians (a dirty lens, a blocked view, a camera knocked askew), and
  the zones it bounds teach nothing that night; a day that cannot be checked yet (the first one)
  teaches nothing either;
- a zone whose equation is off by more than ``gate`` standard deviations of what the factors allow
  teaches nothing that night, and is recorded as such; off again the next night, it is learned (the
  factors are what is wrong then, not the day).

A factor that has moved more than ``flag_factor`` from the prior also flags its device: a counter
that needs a large correction is a counter to check.

A dirty lens must not wait for the night: ``HourlyShares`` sets each device's share of the last hour,
each way, against its usual for that hour of the day; two hours in a row beyond ``flag_share`` both
ways flag the device at once, and its counts are scaled back to its usual share, by all its hours off
together, every hour since it last counted as usual made up, until it counts as usual again, or until
closing; the zones it bounds carry the scale's doubt in their band. Staff headcounts, kept for the
night, are the one measurement of the counters' common scale. Pure Python: forty factors are small sums.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from aggregator.config import DriftConfig
from aggregator.views import ViewAnchors
from lanewatch.site.model import Measured, Site

Key = tuple[str, str]  # device, line
HISTORY_DAYS = 7  # the days a device's usual share is the median of
MIN_CROSSINGS = 200  # a device's share is judged only on days with at least this many crossings around it
#: an hour is judged only when the device should have counted at least this many (its usual share of the
#: others' crossings): below it, chance alone moves a share by more than ``flag_share`` too often
MIN_HOURLY = 60
#: ... in its busier direction; the other direction needs only this many: a lens that sees less misses people
#: both ways, and in the morning (people come, few leave) the quieter direction would hold the verdict for hours
MIN_HOURLY_QUIET = 15
SCALE_BOUNDS = (1 / 3, 3.0)  # the most a live scale may make of a device's counts
#: how far off a live scale may be (relative standard deviation) before a device's days have measured it
SCALE_DOUBT = 0.1
#: what ``scale_sd`` weighs as, in headcounts, against those that measure the counters' scale; and how much each
#: earlier headcount's evidence keeps at each new one (the factors learn from them, so the scale's error changes)
SCALE_PRIOR_WEIGHT, SCALE_MEMORY = 5.0, 0.95


@dataclass(frozen=True)
class Closure:
    """One zone's equation for one night: what the evidence said and whether it was learned from."""

    zone: str
    crossings: int  # people counted across its boundary during the day
    uncorrected: float  # sum of sign * (in - out): the occupancy left at closing with no correction
    before: float  # the same with the factors used during the day
    after: float  # the same with the factors learned from it
    used: bool
    why: str = ""  # why it taught nothing


@dataclass(frozen=True)
class Flag:
    """A device for the technicians to check, and why (English, for logs and the notice)."""

    device: str
    why: str


@dataclass(frozen=True)
class Night:
    """What one night's learning did: the factors after it, the day's counts, the evidence, the flags."""

    time: datetime
    factors: dict[Key, tuple[float, float, float, float]]  # f_in, f_out and their standard deviations
    counts: dict[Key, tuple[int, int]]  # the day's in and out per line
    shares: dict[str, float]  # each device's share of the crossings around its zones that day
    closures: list[Closure] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    headcounts: int = 0  # staff headcounts the night learned from
    #: each line's factor before any night: one over the rates measured at install, or the site's ``prior``
    priors: dict[Key, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rescale:
    """A device's live scale changes: its counts are multiplied by ``new`` from now on, and its last
    ``hours`` hours (counted at whatever scale each had) are made up to ``new`` too."""

    device: str
    new: float
    hours: int


class HourlyShares:
    """Each device's share of the crossings around its zones, hour by hour and per direction, against its
    usual share for that hour of the day (the gates' flows change over a day): a dirty lens found within
    two hours.

    Real gates' shares move by half or double from one day to the next in single hours, but in one
    direction at a time (an evening of leaving by one gate); a lens that sees less misses people both
    ways. So a device is off only when its ``in`` and its ``out`` shares are both off, the same way."""

    def __init__(self, around: dict[str, set[str]], flag_share: float) -> None:
        self.around, self.flag_share = around, flag_share
        self.hour: Optional[int] = None  # the hour being counted (hours since the epoch, data time)
        self.counts: dict[str, tuple[int, int]] = {}
        #: per device and hour of the day, the last days' shares (in, out)
        self.usual: dict[str, dict[int, deque[tuple[float, float]]]] = {device: {} for device in around}
        self.off: dict[str, float] = {}  # devices off their usual share in the last hour judged: the ratio
        self.scale: dict[str, float] = {}  # devices whose counts are scaled now
        self.why: dict[str, str] = {}
        self.usual_at: dict[str, int] = {}  # the last hour each device was judged to count as usual
        #: per device off its usual share, its counts and what its usual share would have given, since it was
        #: found off (in, expected in, out, expected out): a scale from all of them is surer than an hour's
        self.since: dict[str, list[float]] = {}
        self.doubts: dict[str, float] = {}  # each scaled device's doubt, set when it was found

    def add(self, device: str, when: datetime, came: int, went: int) -> Optional[list[Rescale]]:
        """Count a window's crossings; at the first window of a new hour, the verdicts on the hour before
        (None while the hour goes on)."""
        hour = int(when.timestamp() - 1e-6) // 3600  # a window ending on the hour is the hour before's
        verdicts = None
        if self.hour is None:
            self.hour = hour
        elif hour > self.hour:
            verdicts = self._judge(self.hour)
            self.hour, self.counts = hour, {}
        old_in, old_out = self.counts.get(device, (0, 0))
        self.counts[device] = (old_in + came, old_out + went)
        return verdicts

    def factor(self, device: str) -> float:
        return self.scale.get(device, 1.0)

    def doubt(self, device: str) -> float:
        """How far off a live scale of the device may be (relative standard deviation)."""
        return self.doubts.get(device, SCALE_DOUBT)

    def _spread(self, device: str) -> float:
        """How far the device's share strays from day to day at the same hour (the median over the hours with
        three days or more; ``SCALE_DOUBT`` before): a scale set from its usual share is only as sure."""
        spreads = []
        for history in self.usual.get(device, {}).values():
            if len(history) >= 3 and min(min(shares) for shares in history) > 0:
                spreads.append(statistics.stdev(0.5 * math.log(came * went) for came, went in history))
        return statistics.median(spreads) if spreads else SCALE_DOUBT

    def close_day(self) -> None:
        """At closing every scale ends with its day: tonight's check takes the device over, and a lens
        still dirty tomorrow is found again within two hours (a scale kept overnight would count a
        cleaned lens double through the quiet morning hours, too few to judge)."""
        self.scale.clear()
        self.why.clear()
        self.off.clear()
        self.since.clear()
        self.doubts.clear()

    def _shares(
        self, device: str, counted: dict[str, tuple[float, float]]
    ) -> Optional[tuple[tuple[float, float], tuple[float, float]]]:
        """The device's shares (in, out) of the hour's crossings around its zones, as ``counted``, and the
        others' crossings (in, out); None without data from it (the device checks report that)."""
        if device not in self.counts:
            return None
        around = [counted.get(d, (0.0, 0.0)) for d in self.around[device] if d != device]
        others = (sum(c[0] for c in around), sum(c[1] for c in around))
        if min(others) <= 0:
            return None
        own = self.counts[device]
        return (own[0] / others[0], own[1] / others[1]), others

    def _judge(self, hour: int) -> list[Rescale]:
        """The hour's verdicts. The others' crossings are taken as corrected (a dirty neighbour makes every
        other device's share look high): the device furthest off is judged first and its counts corrected
        before the rest are judged again; a device counting short goes before one counting over as far."""
        counted: dict[str, tuple[float, float]] = dict(self.counts)
        usual: dict[str, tuple[float, float]] = {}
        hour_of_day = hour % 24
        for device in self.around:
            shares = self._shares(device, counted)
            if shares is None:
                continue
            history = self.usual[device].setdefault(hour_of_day, deque(maxlen=HISTORY_DAYS))
            if len(history) < 2:  # still learning what is usual
                if device not in self.scale:
                    history.append(shares[0])
                continue
            usual[device] = (statistics.median(s[0] for s in history), statistics.median(s[1] for s in history))
            expected = sorted((usual[device][0] * shares[1][0], usual[device][1] * shares[1][1]))
            if expected[1] < MIN_HOURLY or expected[0] < MIN_HOURLY_QUIET:  # too few people to judge
                del usual[device]
        judged: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}  # device -> (shares, ratios)
        while usual:
            now = {}
            for device, (usual_in, usual_out) in usual.items():
                shares = self._shares(device, counted)
                if shares is not None:
                    now[device] = (shares[0], (shares[0][0] / usual_in, shares[0][1] / usual_out))
            off = [d for d, (_shares, ratios) in now.items() if self._off(ratios)]
            if not off:
                judged.update(now)
                break
            device = max(off, key=lambda d: (abs(math.log(now[d][1][0] * now[d][1][1])), -now[d][1][0]))
            judged[device] = now[device]
            del usual[device]
            raw, ratios = self.counts[device], now[device][1]
            counted[device] = (raw[0] / ratios[0], raw[1] / ratios[1])
        verdicts = (self._verdict(device, *judgement, hour) for device, judgement in judged.items())
        return [verdict for verdict in verdicts if verdict is not None]

    def _off(self, ratios: tuple[float, float]) -> bool:
        """Off by ``flag_share`` on the whole (the geometric mean of both directions), and both directions well
        off the same way: a real gate's share moves one way at a time, a lens that sees less misses both."""
        whole, both = (ratios[0] * ratios[1]) ** 0.5, (1 + self.flag_share) / 2
        low = whole < self.flag_share and max(ratios) < both
        return low or (whole > 1 / self.flag_share and min(ratios) > 1 / both)

    def _verdict(
        self, device: str, shares: tuple[float, float], ratios: tuple[float, float], hour: int
    ) -> Optional[Rescale]:
        """What an hour off (or back to usual) means for the device; the hour joins its usual ones if it
        was not off. A device found off is scaled by all its hours off together (one hour's share is a few
        dozen people's), and made up since the last hour it counted as usual: a lens dirty from the opening
        counted short through the quiet morning hours, too few to judge."""
        ratio = (ratios[0] * ratios[1]) ** 0.5
        off, verdict = self._off(ratios), None
        scaled = device in self.scale
        back = scaled and abs(ratio - 1) <= (1 - self.flag_share) / 2
        again = device in self.off and (self.off[device] < 1) == (ratio < 1)  # off the same way as the hour before
        if off or (scaled and not back):  # the hour joins the evidence of how far off it counts
            came, went = self.counts[device]
            hour_sums = (
                came,
                came / ratios[0] if ratios[0] > 0 else 0.0,
                went,
                went / ratios[1] if ratios[1] > 0 else 0.0,
            )
            sums = self.since.get(device, [0.0] * 4) if again or scaled else [0.0] * 4
            self.since[device] = [a + b for a, b in zip(sums, hour_sums)]
        if (off and again) or (scaled and not back):  # a second hour in a row: not chance
            own_in, usual_in, own_out, usual_out = self.since[device]
            whole = ((own_in / usual_in) * (own_out / usual_out)) ** 0.5 if min(usual_in, usual_out) > 0 else 0.0
            new = min(SCALE_BOUNDS[1], max(SCALE_BOUNDS[0], 1 / whole)) if whole > 0 else SCALE_BOUNDS[1]
            if not scaled:
                self.doubts[device] = self._spread(device)
            self.scale[device] = new
            self.why[device] = (f"counted {whole:.0%} of its usual share of the crossings around its zones, "
                                "both ways, since it was found off (a dirty or blocked lens, or a moved camera?); "
                                f"counts scaled by {new:.2f} until it counts as usual")  # fmt: skip
            verdict = Rescale(device, new, max(2, hour - self.usual_at.get(device, hour - 24)))
        elif back:
            del self.scale[device], self.why[device]
            self.since.pop(device, None)
            verdict = Rescale(device, 1.0, 1)
        if off:
            self.off[device] = ratio
        else:
            self.off.pop(device, None)
            if not scaled:
                self.since.pop(device, None)
            if device not in self.scale:
                self.usual[device][hour % 24].append(shares)
                self.usual_at[device] = hour
        return verdict

    def state(self) -> dict[str, dict[str, list[tuple[float, float]]]]:
        return {device: {str(h): list(v) for h, v in hours.items()} for device, hours in self.usual.items()}

    def restore(self, state: dict[str, dict[str, list[list[float]]]]) -> None:
        for device, hours in state.items():
            if device in self.usual:
                self.usual[device] = {
                    int(h): deque(((s[0], s[1]) for s in v[-HISTORY_DAYS:]), maxlen=HISTORY_DAYS)
                    for h, v in hours.items()
                }


class CountingFactors:
    """Every counting line's two factors, their joint uncertainty, and the nightly learning."""

    def __init__(self, site: Site, config: DriftConfig) -> None:
        self.config = config
        self.keys: list[Key] = [(d.id, line.name) for d in site.devices for line in d.lines]
        self.index = {key: 2 * i for i, key in enumerate(self.keys)}  # f_in at i, f_out at i + 1
        size = 2 * len(self.keys)
        #: each factor before any night, and how sure: a line's measured rates, else the site's ``prior``
        self.prior = [config.prior] * size
        self.p = [[(config.prior_sd**2 if i == j else 0.0) for j in range(size)] for i in range(size)]
        for item in site.devices:
            for line in item.lines:
                if line.measured is not None:
                    i = self.index[(item.id, line.name)]
                    scale, scale_sd = measured_prior(line.measured, config)
                    self.prior[i] = self.prior[i + 1] = scale
                    # f_in = scale + d, f_out = scale - d: the scale as sure as the count, d as unknown as ever
                    var, cov = scale_sd**2 + config.prior_sd**2 / 2, scale_sd**2 - config.prior_sd**2 / 2
                    self.p[i][i] = self.p[i + 1][i + 1] = var
                    self.p[i][i + 1] = self.p[i + 1][i] = cov
        self.x = list(self.prior)
        entrance_of = {d.id: d.entrance for d in site.devices}
        leaves = [z.id for z in site.zones if not site.children(z.id)]
        #: each third-level zone's boundary lines with the sign of ``in`` for the zone
        self.boundary: dict[str, list[tuple[Key, int]]] = {}
        for zone in leaves:
            signs = {e.id: sign for e, sign in site.boundary_entrances(zone)}
            self.boundary[zone] = [
                (key, signs[entrance_of[key[0]]]) for key in self.keys if entrance_of[key[0]] in signs
            ]
        #: the devices around each device's zones (its neighbours in the share check)
        self.around: dict[str, set[str]] = {}
        for lines in self.boundary.values():
            devices = {key[0] for key, _sign in lines}
            for device in devices:
                self.around.setdefault(device, set()).update(devices)
        self.usual: dict[str, deque[float]] = {d.id: deque(maxlen=HISTORY_DAYS) for d in site.devices}
        self.hourly = HourlyShares(self.around, config.flag_share)
        self.views = ViewAnchors(site, config)
        self.flagged: set[str] = set()  # devices last night flagged as counting off their usual share
        #: the day's staff headcounts as equations: (zone, its boundary lines' counts since closing then, count)
        self.headcounts: list[tuple[str, dict[Key, tuple[int, int]], int]] = []
        self.gated: set[str] = set()  # zones whose equation was left out last night as too far off
        #: per zone, what was left at closing with the factors in use, per person crossing: the error rate
        #: that makes each zone's uncertainty band
        self.residuals: dict[str, deque[float]] = {zone: deque(maxlen=HISTORY_DAYS) for zone in self.boundary}
        #: the headcounts' evidence of how far the counts' common scale is off: how many (fading), the sum of the
        #: squares of what the zones had gained, and of how far the counts were off beyond their noise
        self.scale_evidence = (0.0, 0.0, 0.0)

    def scale_sd(self) -> float:
        """How far all counters together may be off in scale (relative): ``scale_sd`` until staff headcounts
        measure it, then what they found (give or take, with the prior's weight)."""
        weight, gained, excess = self.scale_evidence
        prior = self.config.scale_sd**2
        found = max(0.0, excess) / gained if gained else prior  # a ratio of sums: big gains weigh most
        return ((SCALE_PRIOR_WEIGHT * prior + weight * min(1.0, found)) / (SCALE_PRIOR_WEIGHT + weight)) ** 0.5

    def scale_seen(self, off: float, gained: float, noise_var: float) -> None:
        """A headcount ``off`` people from the counted estimate of a zone that gained ``gained`` people since its
        last anchor, with ``noise_var`` of that expected from the count and the counts' balance: what is left
        beyond the noise is the counts' scale error, as a share of what they gained."""
        weight, gains, excess = self.scale_evidence
        m = SCALE_MEMORY
        self.scale_evidence = (m * weight + 1.0, m * gains + gained**2, m * excess + off**2 - noise_var)

    def factor(self, key: Key) -> tuple[float, float]:
        """The factors (in, out) of a line; the prior's for a line the inventory does not name."""
        i = self.index.get(key)
        return (self.x[i], self.x[i + 1]) if i is not None else (self.config.prior, self.config.prior)

    def error_rate(self, zone: Optional[str] = None) -> float:
        """How far off occupancy ends up per person crossing the boundary: the root mean square of the last
        nights' closing residuals of ``zone`` (of every third-level zone for the others, or without
        nights of its own), ``band_rate`` before any night."""
        values = list(self.residuals.get(zone, ())) if zone is not None else []
        if not values:
            values = [v for rates in self.residuals.values() for v in rates]
        if not values:
            return self.config.band_rate
        return (sum(v * v for v in values) / len(values)) ** 0.5

    def measured(self, zone: str) -> bool:
        """Whether nights have measured how far the zone's estimate strays (else its band is a guess)."""
        return bool(self.residuals.get(zone))

    def learn(self, counts: dict[Key, tuple[int, int]], when: datetime) -> Night:
        """One night's learning from the day's counts per line (in, out since the last closing)."""
        config, size = self.config, len(self.x)
        shares, flags, unchecked = self._check_shares(counts)
        flagged = {flag.device for flag in flags}
        gated = set()
        for i in range(size):  # the factors may have moved since yesterday
            self.p[i][i] += config.night_sd**2
        rows, verdicts = {}, {}
        for zone, lines in self.boundary.items():
            h = rows[zone] = self._equation(lines, counts)
            crossings = sum(sum(counts.get(key, (0, 0))) for key, _sign in lines)
            before = _dot(h, self.x)
            why = ""
            if crossings == 0:
                why = "no crossings"
            elif flagged & {key[0] for key, _sign in lines}:
                why = "a device around it counted far from its usual share"
            elif unchecked & {key[0] for key, _sign in lines}:
                why = "no earlier day to check the devices' counts against yet"
            else:
                ph = [_dot(row, h) for row in self.p]
                spread = _dot(h, ph) + config.count_var * crossings + 1.0
                if before**2 > config.gate**2 * spread and zone not in self.gated:
                    # one odd night is left out; the same again the next night is evidence, and learned
                    why = f"{before:+.0f} people left at closing, beyond what the factors allow"
                    gated.add(zone)
                else:
                    gain = [v / spread for v in ph]
                    self.x = [x - g * before for x, g in zip(self.x, gain)]
                    self.p = [[pij - gi * phj for pij, phj in zip(row, ph)] for row, gi in zip(self.p, gain)]
            verdicts[zone] = (crossings, before, why)
        learned_counts = self._learn_headcounts(flagged | unchecked)
        low, high = config.bounds
        self.x = [min(high, max(low, x)) for x in self.x]
        closures = []
        for zone, (crossings, before, why) in verdicts.items():
            if crossings and not flagged & {key[0] for key, _sign in self.boundary[zone]}:
                self.residuals[zone].append(before / crossings)
            uncorrected = sum(sign * (counts.get(key, (0, 0))[0] - counts.get(key, (0, 0))[1])
                              for key, sign in self.boundary[zone])  # fmt: skip
            closures.append(Closure(zone, crossings, uncorrected, before, _dot(rows[zone], self.x), not why, why))
        self.gated = gated
        for device, share in shares.items():  # odd days too: the median of a week outvotes them
            self.usual[device].append(share)
        self.flagged = set(flagged)
        self.views.close_day()
        flags += self._check_factors(flagged)
        factors = {
            key: (self.x[i], self.x[i + 1], self.p[i][i] ** 0.5, self.p[i + 1][i + 1] ** 0.5)
            for key, i in self.index.items()
        }
        priors = {key: self.prior[i] for key, i in self.index.items()}
        return Night(when, factors, dict(counts), shares, closures, flags, learned_counts, priors)

    def headcount(self, zone: str, counts: dict[Key, tuple[int, int]], count: int) -> None:
        """Keep a staff headcount for the night: the one measurement of how many people the counts stand
        for (closing equations say only that they balance, whatever the common scale)."""
        if zone in self.boundary:
            lines = {key: counts.get(key, (0, 0)) for key, _sign in self.boundary[zone]}
            self.headcounts.append((zone, lines, count))

    def _learn_headcounts(self, untrusted: set[str]) -> int:
        """The day's headcounts as measurements of the factors: the zone's counts since closing, times
        the factors, are the count (give or take the counting noise and ``headcount_sd``). Those with an
        untrusted device around their zone, or too far off to believe, teach nothing; returns how many did."""
        config, learned = self.config, 0
        for zone, counts, count in self.headcounts:
            lines = self.boundary[zone]
            if untrusted & {key[0] for key, _sign in lines}:
                continue
            h = self._equation(lines, counts)
            crossings = sum(sum(c) for c in counts.values())
            off = count - _dot(h, self.x)
            ph = [_dot(row, h) for row in self.p]
            spread = _dot(h, ph) + config.count_var * crossings + (config.headcount_sd * count) ** 2 + 1.0
            if off**2 > config.gate**2 * spread:
                continue
            gain = [v / spread for v in ph]
            self.x = [x + g * off for x, g in zip(self.x, gain)]
            self.p = [[pij - gi * phj for pij, phj in zip(row, ph)] for row, gi in zip(self.p, gain)]
            learned += 1
        self.headcounts = []
        return learned

    def _equation(self, lines: list[tuple[Key, int]], counts: dict[Key, tuple[int, int]]) -> list[float]:
        """The zone's closing equation as coefficients of the factors: its occupancy left at closing."""
        h = [0.0] * len(self.x)
        for key, sign in lines:
            day_in, day_out = counts.get(key, (0, 0))
            h[self.index[key]] += sign * day_in
            h[self.index[key] + 1] -= sign * day_out
        return h

    def _check_shares(self, counts: dict[Key, tuple[int, int]]) -> tuple[dict[str, float], list[Flag], set[str]]:
        """Each device's share of the crossings around its zones today, the devices far from their usual,
        and those with nothing yet to compare today with."""
        per_device: dict[str, int] = {}
        for (device, _line), (day_in, day_out) in counts.items():
            per_device[device] = per_device.get(device, 0) + day_in + day_out
        shares, flags, unchecked = {}, [], set()
        for device, around in self.around.items():
            own = per_device.get(device, 0)
            others = sum(per_device.get(d, 0) for d in around if d != device)
            if own + others < MIN_CROSSINGS or others == 0:
                continue
            shares[device] = own / others
            if not self.usual[device]:
                unchecked.add(device)
                continue
            ratio = shares[device] / statistics.median(self.usual[device])
            if ratio < self.config.flag_share or ratio > 1 / self.config.flag_share:
                flags.append(Flag(device, f"counted {ratio:.0%} of its usual share of the crossings around "
                                          "its zones (a dirty or blocked lens, or a moved camera?)"))  # fmt: skip
        return shares, flags, unchecked

    def _check_factors(self, flagged: set[str]) -> list[Flag]:
        """Devices whose factors moved far from the prior: they count too few or too many in one direction."""
        flags = []
        for (device, line), i in self.index.items():
            if device in flagged:
                continue
            for direction, value, prior in (
                ("in", self.x[i], self.prior[i]),
                ("out", self.x[i + 1], self.prior[i + 1]),
            ):
                if abs(value - prior) > self.config.flag_factor:
                    flags.append(Flag(device, f"line {line} counts {1 / value:.0%} of the people going {direction}, "
                                              f"by the nights' evidence (factor {value:.2f})"))  # fmt: skip
                    flagged.add(device)
                    break
        return flags

    # --- persistence -------------------------------------------------------------------------------

    def dumps(self) -> str:
        """The factors, their covariance and each device's usual shares as JSON: what a restart needs."""
        return json.dumps(
            {
                "keys": self.keys,
                "x": [round(v, 6) for v in self.x],
                "prior": [round(v, 6) for v in self.prior],
                "p": [[float(f"{v:.6g}") for v in row] for row in self.p],
                "usual": {device: list(shares) for device, shares in self.usual.items()},
                "gated": sorted(self.gated),
                "residuals": {zone: list(values) for zone, values in self.residuals.items()},
                "hourly": self.hourly.state(),
                "views": self.views.state(),
                "flagged": sorted(self.flagged),
                "scale": [round(v, 6) for v in self.scale_evidence],
                "headcounts": [
                    [zone, [[*key, *c] for key, c in counts.items()], n] for zone, counts, n in self.headcounts
                ],
            },
            separators=(",", ":"),
        )

    def loads(self, text: str) -> None:
        """Continue from a state ``dumps`` wrote; lines added to the inventory since, and lines measured anew
        at install (their rates changed), start from their prior."""
        state = json.loads(text)
        position = {tuple(key): 2 * i for i, key in enumerate(state["keys"])}
        before = state.get("prior") or [self.config.prior] * len(state["x"])
        mine = [
            (self.index[key], position[key])
            for key in self.keys
            if key in position and abs(float(before[position[key]]) - self.prior[self.index[key]]) < 1e-6
        ]
        for i, j in mine:
            for a in (0, 1):
                self.x[i + a] = float(state["x"][j + a])
                for k, m in mine:
                    for b in (0, 1):
                        self.p[i + a][k + b] = float(state["p"][j + a][m + b])
        self.gated = set(state.get("gated", []))
        for zone, values in state.get("residuals", {}).items():
            if zone in self.residuals:
                self.residuals[zone].clear()
                self.residuals[zone].extend(float(v) for v in values[-HISTORY_DAYS:])
        self.hourly.restore(state.get("hourly", {}))
        self.views.restore(state.get("views", {}))
        self.flagged = set(state.get("flagged", []))
        weight, gains, excess = state.get("scale", (0.0, 0.0, 0.0))
        self.scale_evidence = (float(weight), float(gains), float(excess))
        self.headcounts = [
            (zone, {(d, line): (int(i), int(o)) for d, line, i, o in counts}, int(n))
            for zone, counts, n in state.get("headcounts", [])
            if zone in self.boundary
        ]
        for device, shares in state["usual"].items():
            if device in self.usual:
                self.usual[device].clear()
                self.usual[device].extend(float(v) for v in shares[-HISTORY_DAYS:])


def measured_prior(measured: Measured, config: DriftConfig) -> tuple[float, float]:
    """A measured line's factor before any night, for both directions, and its standard deviation: one over
    its rates' geometric mean, within ``bounds``, as sure as the hand count makes it. Only the scale: a count
    of 200 each way tells a line's in/out difference to about 3 %, less well than the first nights do, and a
    difference taken from it would unbalance the zones (occupancy adds up the difference all day)."""
    low, high = config.bounds
    rate = (measured.rate_in * measured.rate_out) ** 0.5
    factor = min(high, max(low, 1.0 / rate))
    doubt = (measured.doubt(measured.rate_in) ** 2 + measured.doubt(measured.rate_out) ** 2) ** 0.5 / 2
    return factor, factor * doubt


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))
