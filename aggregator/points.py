"""The InfluxDB schema, as line protocol: one function per measurement (documented in docs/influxdb.md).

Tags are ids from the site inventory only (site, device, line, entrance, zone, kind, reason,
instance), so the number of series is bounded by the inventory, never by the traffic. A count
window's point is keyed by its device, line and window end: writing the same window twice
overwrites the point with the same values, so a redelivery can never double a count.

Written by hand rather than with ``influxdb_client.Point``: the tags and field names are fixed and
safe, and formatting strings directly is several times faster on the hot path.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from aggregator.drift import Night
from lanewatch import contract

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def ns(when: datetime) -> int:
    """Nanoseconds since the epoch, exact to the microsecond (no float rounding)."""
    delta = when - EPOCH
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def count(window: contract.CountWindow, entrance: str, zone: str) -> str:
    seconds = (window.window_end - window.window_start).total_seconds()
    return (
        f"counts,site={window.site},device={window.device},line={window.line},entrance={entrance},zone={zone} "
        f"in={window.in_}i,out={window.out}i,total_in={window.total_in}i,total_out={window.total_out}i,"
        f'in_view={window.in_view}i,window_s={seconds!r},seq={window.seq}i,boot_id="{window.boot_id}" '
        f"{ns(window.window_end)}"
    )


def heartbeat(beat: contract.Heartbeat, entrance: str) -> str:
    fields = [
        f"uptime_s={beat.uptime_s!r}",
        f"fps={beat.fps!r}",
        f"dropped_frames={beat.dropped_frames}i",
        f"load1={beat.load1!r}",
        f"outbox_depth={beat.outbox_depth}i",
        f"outbox_dropped={beat.outbox_dropped}i",
        f'camera="{beat.camera}"',
        f'sign="{beat.sign}"',
        f'boot_id="{beat.boot_id}"',
    ]
    if beat.inference_ms is not None:
        fields.append(f"inference_ms={beat.inference_ms!r}")
    if beat.cpu_temp_c is not None:
        fields.append(f"cpu_temp_c={beat.cpu_temp_c!r}")
    if beat.clock_synced is not None:
        fields.append(f"clock_synced={'true' if beat.clock_synced else 'false'}")
    return f"heartbeat,site={beat.site},device={beat.device},entrance={entrance} {','.join(fields)} {ns(beat.time)}"


def availability(message: contract.Availability, entrance: str, received: datetime) -> str:
    online = 1 if message.state == "online" else 0
    return (
        f"availability,site={message.site},device={message.device},entrance={entrance} "
        f'online={online}i,state="{message.state}",boot_id="{message.boot_id}" {ns(received)}'
    )


def zone(
    site: str,
    zone_id: str,
    kind: str,
    occupancy: int,
    raw: int,
    uncorrected: int,
    band: int,
    crossed: int,
    capacity: int,
    area_m2: Optional[float],
    when: datetime,
    flow: Optional[tuple[int, int]] = None,
    view: Optional[int] = None,
) -> str:
    """A zone's occupancy; ``flow`` is the counted occupancy and its band before the views, ``view`` what the
    views see."""
    fields = (
        f"occupancy={occupancy}i,raw={raw}i,uncorrected={uncorrected}i,band={band}i,crossed={crossed}i,"
        f"capacity={capacity}i,share={occupancy / capacity!r}"
    )
    if flow is not None:
        fields += f",flow={flow[0]}i,flow_band={flow[1]}i"
    if view is not None:
        fields += f",view={view}i"
    if area_m2:
        fields += f",density={occupancy / area_m2!r}"
    return f"zones,site={site},zone={zone_id},kind={kind} {fields} {ns(when)}"


def line_state(
    site: str,
    device: str,
    line: str,
    total_in: int,
    total_out: int,
    net: int,
    boot_id: str,
    when: datetime,
    day: tuple[int, int] = (0, 0),
) -> str:
    """The roll-up's memory of one counting line: enough to rebuild zone occupancy after a restart, and
    the day's counts that the night's learning needs."""
    return (
        f"line_state,site={site},device={device},line={line} total_in={total_in}i,total_out={total_out}i,"
        f'net={net}i,boot_id="{boot_id}",day_in={day[0]}i,day_out={day[1]}i {ns(when)}'
    )


def night(site: str, learned: Night, state: Optional[str] = None) -> list[str]:
    """What one night's learning did: every line's factors with the day's counts they were learned from,
    every zone's closing equation, and the devices flagged to the technicians (``docs/influxdb.md``)."""
    when = ns(learned.time)
    flags = {flag.device: flag.why for flag in learned.flags}
    out = []
    for (device, line), (f_in, f_out, sd_in, sd_out) in learned.factors.items():
        day_in, day_out = learned.counts.get((device, line), (0, 0))
        fields = (
            f"f_in={f_in!r},f_out={f_out!r},sd_in={sd_in!r},sd_out={sd_out!r},day_in={day_in}i,day_out={day_out}i,"
            f"flagged={'true' if device in flags else 'false'},why={_string(flags.get(device, ''))}"
        )
        if device in learned.shares:
            fields += f",share={learned.shares[device]!r}"
        if (device, line) in learned.priors:
            fields += f",prior={learned.priors[(device, line)]!r}"
        out.append(f"counting_factors,site={site},device={device},line={line} {fields} {when}")
    for closure in learned.closures:
        out.append(
            f"closures,site={site},zone={closure.zone} crossings={closure.crossings}i,"
            f"uncorrected={closure.uncorrected!r},before={closure.before!r},after={closure.after!r},"
            f"used={'true' if closure.used else 'false'},why={_string(closure.why)} {when}"
        )
    if state is not None:
        out.append(f"factor_state,site={site} state={_string(state)} {when}")
    return out


def correction(
    site: str, zone_id: str, reason: str, delta: int, before: int, when: datetime, by: str = "", observed: int = -1
) -> str:
    """``by``: who anchored it (a headcount's person); ``observed``: what they counted."""
    fields = f"delta={delta}i,before={before}i"
    if by:
        fields += f",by={_string(by)},observed={observed}i"
    return f"corrections,site={site},zone={zone_id},reason={reason} {fields} {ns(when)}"


def level(site: str, zone_id: str, level: str, previous: str, reason: str, coverage: float, when: datetime) -> str:
    rank = {"unknown": -1, "green": 0, "yellow": 1, "red": 2}[level]
    return (
        f"levels,site={site},zone={zone_id} level={_string(level)},previous={_string(previous)},rank={rank}i,"
        f"coverage={coverage!r},reason={_string(reason)} {ns(when)}"
    )


def warning(site: str, zone_id: str, predicted: int, capacity: int, minutes: int, reason: str, when: datetime) -> str:
    return (
        f"warnings,site={site},zone={zone_id} predicted={predicted}i,capacity={capacity}i,minutes={minutes}i,"
        f"reason={_string(reason)} {ns(when)}"
    )


def status(message: contract.AggregatorStatus) -> str:
    fields = (
        f"processed={message.processed}i,stored={message.stored}i,rejected={message.rejected}i,"
        f'deduplicated={message.deduplicated}i,spooled={message.spooled}i,database="{message.database}"'
    )
    if message.lag_s is not None:
        fields += f",lag_s={message.lag_s!r}"
    return f"aggregator,site={message.site},instance={message.instance} {fields} {ns(message.time)}"
