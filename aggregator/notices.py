"""What to tell people and signs when a zone's level changes: the diversion notice and its receivers.

A notice names the zone's officer and staff and the signs at the zone's entrances; it is published
once on the zone's topic and once on each of those entrances' topics (each sign listens on its own).
Besides level changes, a `predicted red` notice asks to meter entry before a zone is full.
Visitors are only ever sent to neighbouring zones that are green with room to spare: never to one
that is yellow, red or unknown.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Callable

from aggregator.forecast import EarlyWarning
from aggregator.levels import Change
from aggregator.rollup import ZoneState
from lanewatch import contract
from lanewatch.site.model import Site

#: The contract's bound on a density (persons/m²), far beyond any crowd that can stand.
MAX_DENSITY = 100.0


def persons(count: int) -> int:
    """A count as the contract can carry it (0 to 2^53 - 1), whatever the counters made of it."""
    return min(max(count, 0), contract.MAX_TOTAL)


def level_state(site: Site, change: Change) -> contract.LevelState:
    """The retained state a level change leaves."""
    return current_state(site, change.state, change.level, change.coverage, change.time, change.reason, change.time)


def current_state(
    site: Site, state: ZoneState, level: str, coverage: float, since: datetime, reason: str, when: datetime
) -> contract.LevelState:
    """A zone's retained state: its level (held ``since``, for ``reason``) with its numbers at ``when``."""
    known = level != "unknown"
    return contract.LevelState(
        site=site.site.id,
        zone=state.zone,
        level=level,  # type: ignore[arg-type]
        occupancy=persons(state.occupancy) if known else None,
        band=persons(state.band) if known else None,
        capacity=state.capacity,
        density=min(round(state.density, 4), MAX_DENSITY) if known and state.density is not None else None,
        coverage=round(coverage, 4),
        since=since,
        time=when,
        reason=reason[: contract.MAX_TEXT],
    )


def _divert(site: Site, zone_id: str, level_of: Callable[[str], str], share_of: Callable[[str], float]) -> list[str]:
    """Neighbouring zones that are green with room to spare, emptiest first."""
    spare = [n for n in site.zone(zone_id).neighbours if level_of(n) == "green" and share_of(n) < 0.7]
    return sorted(spare, key=share_of)


def _receivers(site: Site, zone_id: str) -> list[str]:
    """The zone's officer and staff, then the signs at its boundary entrances."""
    zone = site.zone(zone_id)
    signs = [s.id for e, _sign in site.boundary_entrances(zone_id) for s in site.signs_at(e.id)]
    return ([p for p in [zone.officer, *zone.staff] if p] + signs)[: contract.MAX_IDS]


def _where(site: Site, divert: list[str]) -> tuple[str, str]:
    return "、".join(site.zone(n).name.zh for n in divert), ", ".join(site.zone(n).name.en for n in divert)


def notice(
    site: Site,
    change: Change,
    level_of: Callable[[str], str],
    share_of: Callable[[str], float],
    uncertain_at: float = 0.1,
) -> contract.DiversionNotice:
    """A level change for the zone's people and signs; it says so when the level rests on an estimate
    whose band is at least ``uncertain_at`` of the capacity."""
    zone = site.zone(change.zone)
    boundary = [entrance.id for entrance, _sign in site.boundary_entrances(zone.id)]
    meter, close = (boundary, []) if change.level == "yellow" else ([], boundary) if change.level == "red" else ([], [])
    divert = _divert(site, zone.id, level_of, share_of) if change.level in ("yellow", "red") else []
    name = zone.name
    where_zh, where_en = _where(site, divert)
    # English as "Name: state" (no verb to agree with "Three Lanes" or "Nanhou Street")
    if change.level == "red":
        zh = f"{name.zh}已饱和，请暂停进入" + (f"，引导游客前往{where_zh}。" if divert else "。")
        en = f"{name.en}: full, stop entry" + (f", send visitors to {where_en}." if divert else ".")
    elif change.level == "yellow":
        zh = f"{name.zh}人流拥挤，请控制进入" + (f"，可引导游客前往{where_zh}。" if divert else "。")
        en = f"{name.en}: crowded, meter entry" + (f", visitors can go to {where_en}." if divert else ".")
    elif change.level == "unknown":
        zh, en = f"{name.zh}客流数据中断，请现场确认。", f"{name.en}: no crowd data, check on site."
    elif change.previous in ("yellow", "red"):
        zh, en = f"{name.zh}恢复畅通。", f"{name.en}: clear again."
    else:  # green from unknown: data again (or the first), nothing was crowded
        zh, en = f"{name.zh}人流正常。", f"{name.en}: not crowded."
    known = change.level != "unknown"
    band = change.state.band
    if known and band >= uncertain_at * change.state.capacity:
        zh += f"（人数为估算，误差约±{band:,}人，请现场核实。）"
        en += f" The count is an estimate, give or take {band:,} people: check on site."
    return contract.DiversionNotice(
        site=site.site.id,
        id=uuid.uuid4().hex,
        kind="level_change",
        zone=zone.id,
        level=change.level,  # type: ignore[arg-type]
        previous_level=change.previous,  # type: ignore[arg-type]
        occupancy=persons(change.state.occupancy) if known else None,
        band=persons(band) if known else None,
        capacity=change.state.capacity,
        trend=change.trend,  # type: ignore[arg-type]
        time=change.time,
        reason=change.reason[: contract.MAX_TEXT],
        actions=contract.Actions(meter_inbound=meter, close_inbound=close, divert_to=divert),
        text=contract.NoticeText(zh=zh, en=en),
        to=_receivers(site, zone.id),
    )


def predicted(
    site: Site, warning: EarlyWarning, level_of: Callable[[str], str], share_of: Callable[[str], float]
) -> contract.DiversionNotice:
    """`predicted red`: meter entry now, before the zone is full, and send visitors elsewhere."""
    zone = site.zone(warning.zone)
    level = level_of(zone.id)
    divert = _divert(site, zone.id, level_of, share_of)
    where_zh, where_en = _where(site, divert)
    name = zone.name
    zh = f"{name.zh}预计约{warning.minutes}分钟后饱和，请提前控制进入"
    zh += f"，可引导游客前往{where_zh}。" if divert else "。"
    en = f"{name.en} is expected to be full within {warning.minutes} min: meter entry now" + (
        f", visitors can go to {where_en}." if divert else "."
    )
    return contract.DiversionNotice(
        site=site.site.id,
        id=uuid.uuid4().hex,
        kind="predicted_red",
        zone=zone.id,
        level=level,  # type: ignore[arg-type]
        previous_level=level,  # type: ignore[arg-type]
        occupancy=persons(warning.occupancy),
        capacity=warning.capacity,
        trend="rising",
        time=warning.time,
        reason=warning.reason[: contract.MAX_TEXT],
        actions=contract.Actions(
            meter_inbound=[e.id for e, _sign in site.boundary_entrances(zone.id)], divert_to=divert
        ),
        text=contract.NoticeText(zh=zh, en=en),
        to=_receivers(site, zone.id),
    )


#: Problems a technician must fix that do not stop the device counting (its zones keep their level).
COUNTING = ("disk_full", "clock_off", "bad_data", "miscounting")
PROBLEM_TEXT = {
    "offline": ("离线", "is offline"),
    "silent": ("无数据", "has sent nothing for too long"),
    "camera_failed": ("摄像头故障", "reports a failed camera"),
    "disk_full": ("存储已满，计数暂存内存", "has a full disk: it still counts, but a restart now would lose counts"),
    "clock_off": (
        "时钟偏差过大，中心正在校正其计数时间",
        "has a clock far off: the centre re-times its counts; fix its NTP",
    ),
    "bad_data": ("发送的数据不合规，已被中心拒收", "sends data the centre rejects"),
    "miscounting": (
        "计数明显偏离实际，区域人数已按夜间校准修正",
        "counts far from the truth: its zones' occupancy is corrected, but the counter needs a look",
    ),
    "recovered": ("已恢复", "counts again"),
}


def fault(
    site: Site, device_id: str, problem: str, since: datetime, when: datetime, why: str = ""
) -> contract.DeviceFault:
    """The technicians' notice for one device; ``zones`` are those that go unknown without it; ``why``:
    the reason of a rejection (``bad_data``), as the dead letter says it."""
    device = next(d for d in site.devices if d.id == device_id)
    entrance = next(e for e in site.entrances if e.id == device.entrance)
    zones = [z.id for z in site.zones if any(e.id == entrance.id for e, _s in site.boundary_entrances(z.id))]
    if problem in COUNTING:
        zones = []  # it still counts: no zone goes unknown
    zh, en = PROBLEM_TEXT[problem]
    if why:
        en += f" ({why[:200]})"
    action_zh, action_en = ("", "") if problem == "recovered" else ("，请检修", ": please check it")
    return contract.DeviceFault(
        site=site.site.id,
        device=device.id,
        entrance=entrance.id,
        zones=zones[: contract.MAX_IDS],
        problem=problem,  # type: ignore[arg-type]
        since=since,
        time=when,
        text=contract.NoticeText(
            zh=f"{entrance.name.zh}计数设备 {device.id} {zh}{action_zh}。",
            en=f"The counter {device.id} at {entrance.name.en} {en}{action_en}.",
        ),
        to=[p.id for p in site.people if p.role == "technician"][: contract.MAX_IDS],
    )


def topics(site: Site, message: contract.DiversionNotice) -> list[str]:
    """The zone's topic and the topic of every entrance on its boundary that has a sign."""
    entrances = [e.id for e, _sign in site.boundary_entrances(message.zone) if site.signs_at(e.id)]
    return [contract.topic_for(message)] + [contract.topic_for(message, entrance=e) for e in entrances]
