"""Render a site as a tree: what a control-room newcomer reads to learn the district."""

from __future__ import annotations

from typing import Optional

from lanewatch.site.model import Entrance, Site, Zone


def render_tree(site: Site) -> str:
    lines = [f"{site.site.name.zh} {site.site.name.en} ({site.site.id}), time zone {site.site.timezone}"]
    lines.append(_zone_line(site, site.root))
    _children(site, site.root, "", lines)
    devices, signs = len(site.devices), len(site.signs)
    lines.append(f"{len(site.zones)} zones, {len(site.entrances)} entrances, {devices} devices, {signs} signs")
    return "\n".join(lines)


def _children(site: Site, zone: Zone, prefix: str, lines: list[str]) -> None:
    rows: list[tuple[str, Optional[Zone]]]
    if zone.kind == "grid3":
        rows = [(_entrance_line(site, e), None) for e in site.entrances if e.zone == zone.id]
    else:
        rows = [(_zone_line(site, z), z) for z in site.children(zone.id)]
    for i, (text, child) in enumerate(rows):
        branch, extend = ("└── ", "    ") if i == len(rows) - 1 else ("├── ", "│   ")
        lines.append(prefix + branch + text)
        if child is not None:
            _children(site, child, prefix + extend, lines)


def _zone_line(site: Site, zone: Zone) -> str:
    parts = [f"{zone.id}  {zone.name.zh} / {zone.name.en}", f"capacity {zone.capacity:,} persons"]
    if zone.area_m2:
        parts.append(f"{zone.area_m2:,.0f} m² ({zone.area_m2 / zone.capacity:.1f} m²/person at capacity)")
    if zone.officer:
        parts.append(f"officer {site.person(zone.officer).name}")
    if zone.staff:
        parts.append(f"{len(zone.staff)} staff")
    parts.append(f"{len(site.boundary_entrances(zone.id))} entrances on its boundary")
    return " · ".join(parts)


def _entrance_line(site: Site, entrance: Entrance) -> str:
    side = f"from {entrance.outside}" if entrance.outside else "from outside the area"
    devices = ", ".join(d.id for d in site.devices_at(entrance.id))
    signs = ", ".join(s.id for s in site.signs_at(entrance.id))
    text = f"entrance {entrance.id}  {entrance.name.zh} / {entrance.name.en} ({side}) · devices: {devices}"
    return text + (f" · sign: {signs}" if signs else "")
