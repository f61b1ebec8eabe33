"""Counters that err, for replays: what real people counters do to the flows they report.

Every replay used to feed exact counts, and occupancy (the running sum of in - out over a zone's
boundary) is exact only while every counter is. Here each device, per direction, counts its own
fixed share of the people who cross and adds some who did not; the share falls as the zone behind it
fills (people hide each other); and one device may count only half of what it should for a day (a
dirty lens). The true occupancy stays as it was: replays judge the aggregator against it.

Where the numbers of the ``camera`` model come from, all measured by this project on real footage:
- counting rates 0.90 - 0.98 per device and direction: ``bench/counting_accuracy.py`` (every vertical
  line of both TUD clips, 537 crossings) counts in 93.2 % / out 91.6 % with YOLOv8n and 91.6 % / 88.6 %
  with SSD; ``bench/counting_unseen.py`` (PETS 2009, counted by hand) 97.8 - 100 % with YOLOv8n;
- false counts 2 % of crossings: YOLOv8n adds 7 to 370 in (1.9 %) and 7 to 167 out (4.2 %) in
  ``counting_accuracy``, none on PETS 2009;
- hiding: what both benches miss are people walking two abreast, one hidden behind the other, which
  crowds make common; not measured as a function of crowding here: 8 % fewer counted at a full zone is
  an assumption, stated as one;
- a dirty lens: half the crossings for one whole day, at one device chosen by the seed.

``install_tally`` measures each line's rates as a technician would at install, against a hand count.
``commercial`` is a counter sold for the job (97 - 99 %, 1 % extra, little hiding), as vendors state.

People in view (``in_view``, for devices with a ``view``) err too, by assumptions stated as such (not
measured here): the camera detects people in view at its counting rate, fewer as the zone fills and half
on the dirty lens's day; the share of the zone it sees is off from the inventory's by its own factor
(``view_bias``, one standard deviation, log-normal: the technician's estimate), and wanders within a day
(``view_wander``, with about an hour's memory: people gather in front of a shop, then move on).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from harness.realtraffic import CLOSED, DAY, Traffic, phases
from lanewatch.site.model import Measured, Site


@dataclass(frozen=True)
class CounterErrors:
    """How a fleet of counters errs; each device draws its own rates from these ranges."""

    name: str
    rate: tuple[float, float]  # share of the people crossing that a device counts, per direction
    false_rate: float  # counts of nobody, per person crossing
    hiding: float  # the counting rate falls by this share when the zone behind the device is full
    dirty_lens: bool  # one device counts half of what it should for one day
    view_bias: float = 0.0  # how far a view's real share is from the inventory's (log-normal sd)
    view_wander: float = 0.0  # how far it wanders within a day (log-normal sd, about an hour's memory)


MODELS = {
    "exact": CounterErrors("exact", (1.0, 1.0), 0.0, 0.0, False),
    "camera": CounterErrors("camera", (0.90, 0.98), 0.02, 0.08, True, 0.2, 0.1),
    "commercial": CounterErrors("commercial", (0.97, 0.99), 0.01, 0.02, False, 0.2, 0.1),
}


@dataclass(frozen=True)
class DeviceErrors:
    """What one device was given: its counting rates (in, out) and, for a dirty lens, the day it was dirty."""

    device: str
    rate_in: float
    rate_out: float
    dirty_day: Optional[int] = None


def miscount(
    site: Site, traffic: Traffic, errors: CounterErrors, seed: int = 1, first_day: int = 0
) -> tuple[Traffic, list[DeviceErrors]]:
    """The traffic as these counters report it (``device_flows`` counted, true occupancy kept), and what
    each device was given; a dirty lens falls on ``first_day`` or later. The same seed gives the same
    counters and the same counts."""
    rng = np.random.default_rng(seed)
    devices = sorted(traffic.device_flows)
    days = max(1, traffic.minutes // DAY - first_day)
    dirty = (
        (devices[int(rng.integers(len(devices)))], first_day + int(rng.integers(days))) if errors.dirty_lens else None
    )
    entrances = {e.id: e for e in site.entrances}
    zone_of = {d.id: entrances[d.entrance].zone for d in site.devices}
    given, counted, views = [], {}, {}
    seeing = np.random.default_rng([seed, 1])  # views draw apart: the same seed gives the same counts with or without
    for device in devices:
        low, high = errors.rate
        rates = rng.uniform(low, high, size=2)
        behind = zone_of.get(device)
        fill = np.zeros(traffic.minutes)
        if behind is not None and behind in traffic.occupancy:
            fill = np.clip(traffic.occupancy[behind] / site.zone(behind).capacity, 0.0, 1.5)
        share = np.outer(1.0 - errors.hiding * fill, rates)  # (minutes, 2)
        dirty_day = None
        if dirty is not None and dirty[0] == device:
            dirty_day = dirty[1]
            share[dirty_day * DAY : (dirty_day + 1) * DAY] *= 0.5
        true = traffic.device_flows[device]
        counts = rng.binomial(true, np.clip(share, 0.0, 1.0)) + rng.poisson(true * errors.false_rate)
        counted[device] = counts.astype(np.int64)
        if device in traffic.views:
            views[device] = _in_view(site, traffic, device, errors, rates.mean(), dirty_day, seeing)
        given.append(DeviceErrors(device, round(float(rates[0]), 4), round(float(rates[1]), 4), dirty_day))
    source = f"{traffic.source}, {errors.name} counters"
    return replace(traffic, device_flows=counted, views=views, source=source), given


def install_tally(site: Site, errors: CounterErrors, given: list[DeviceErrors], crossings: int, seed: int = 1) -> Site:
    """The site as a technician leaves it after measuring each line at install against ``crossings`` people
    counted by hand each way (``Measured``): the device counts each at its rate, plus its false counts, by
    chance; in the traffic of an ordinary hour, so not the people a crowd hides, and not a dirty lens."""
    rng = np.random.default_rng([seed, 2])
    rates = {g.device: (g.rate_in, g.rate_out) for g in given}
    devices = []
    for device in site.devices:
        lines = []
        for line in device.lines:
            counted = [rng.binomial(crossings, rate) + rng.poisson(crossings * errors.false_rate)
                       for rate in rates.get(device.id, (1.0, 1.0))]  # fmt: skip
            measured = Measured(rate_in=counted[0] / crossings, rate_out=counted[1] / crossings, crossings=crossings)
            lines.append(line.model_copy(update={"measured": measured}))
        devices.append(device.model_copy(update={"lines": lines}))
    return site.model_copy(update={"devices": devices})


def true_factors(errors: CounterErrors, given: list[DeviceErrors]) -> dict[str, tuple[float, float]]:
    """What each device's counts truly stand for, per direction (in, out): one over its counting rate plus
    its false counts, as a perfect install tally would measure them (not the people a crowd hides, not a
    dirty lens): the factors no correction of the flows can do better than."""
    return {g.device: (1.0 / (g.rate_in + errors.false_rate), 1.0 / (g.rate_out + errors.false_rate)) for g in given}


def _in_view(
    site: Site,
    traffic: Traffic,
    device: str,
    errors: CounterErrors,
    rate: float,
    dirty_day: Optional[int],
    rng: np.random.Generator,
) -> np.ndarray:
    """The people a device sees in its view, minute by minute, as its camera would report them."""
    view = next(d.view for d in site.devices if d.id == device)
    assert view is not None
    zone = site.zone(view.zone)
    people = traffic.occupancy[view.zone].astype(np.int64)
    fill = np.clip(people / zone.capacity, 0.0, 1.5)
    memory = np.exp(-1 / 60)  # the wander's correlation from one minute to the next
    steps = rng.normal(0.0, errors.view_wander * (1 - memory**2) ** 0.5, size=traffic.minutes)
    wander = np.zeros(traffic.minutes)
    for i in range(1, traffic.minutes):
        wander[i] = memory * wander[i - 1] + steps[i]
    share = view.share * np.exp(rng.normal(0.0, errors.view_bias) + wander)
    seen = share * rate * (1.0 - errors.hiding * fill)
    if dirty_day is not None:
        seen[dirty_day * DAY : (dirty_day + 1) * DAY] *= 0.5
    return rng.binomial(people, np.clip(seen, 0.0, 1.0)).astype(np.int64)


def boundary_occupancy(site: Site, traffic: Traffic) -> dict[str, np.ndarray]:
    """Each zone's occupancy as the running sum of its boundary's device counts, back to 0 while the site
    is closed (the aggregator's nightly reset): what the aggregator computes, without the aggregator."""
    closed = phases(site, max(1, traffic.minutes // DAY))[: traffic.minutes] == CLOSED
    if site.site.closing_time is None:
        closed[:] = False
    occupancy = {}
    for zone in site.zones:
        net = np.zeros(traffic.minutes)
        for entrance, sign in site.boundary_entrances(zone.id):
            for device in site.devices_at(entrance.id):
                flows = traffic.device_flows.get(device.id)
                if flows is not None:
                    net += sign * (flows[:, 0] - flows[:, 1])
        running, out = 0.0, np.zeros(traffic.minutes)
        for i in range(traffic.minutes):
            running = 0.0 if closed[i] else running + net[i]
            out[i] = running
        occupancy[zone.id] = out
    return occupancy


def worst_drift(
    site: Site, traffic: Traffic, occupancy: dict[str, np.ndarray], from_minute: int = 0
) -> tuple[float, str]:
    """The largest gap between an occupancy and the truth, as a share of the zone's capacity, and where
    (from ``from_minute`` on)."""
    worst, where = 0.0, ""
    for zone in site.zones:
        gap = np.abs(occupancy[zone.id] - traffic.occupancy[zone.id]) / zone.capacity
        gap[:from_minute] = 0.0
        i = int(np.argmax(gap))
        if gap[i] > worst:
            worst, where = float(gap[i]), f"{zone.id} at {traffic.minute_end(i):%Y-%m-%d %H:%M}Z"
    return worst, where
