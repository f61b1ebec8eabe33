"""Load a site inventory from YAML and report every problem in it, one line each.

A technician fixing a file wants all of its problems at once, each with the line to go to, the
path inside the file and what to do. So every item is validated on its own (a broken zone does not
hide a broken device), and the cross-reference rules run on the items that are well formed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ValidationError

from lanewatch.site.model import (
    KIND_NAMES,
    PARENT_KIND,
    Device,
    Entrance,
    Person,
    Sign,
    Site,
    SiteInfo,
    Zone,
)
from lanewatch.yamlconfig import (
    Loc,
    Problem,
    YamlDocument,
    describe,
    pydantic_problems,
    read_yaml,
    unknown_field,
)

SECTIONS: dict[str, type[BaseModel]] = {
    "people": Person,
    "zones": Zone,
    "entrances": Entrance,
    "devices": Device,
    "signs": Sign,
}
REQUIRED_SECTIONS = ("site", "zones", "entrances", "devices")


def load_site(path: Union[str, Path]) -> Site:
    """Read, check and return the site at ``path``; raise ConfigError listing every problem."""
    return _site_from(read_yaml(path))


def _site_from(document: YamlDocument) -> Site:
    data = document.data
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise document.fail([Problem((), f"expected a mapping with {', '.join(REQUIRED_SECTIONS)}; got {got}")])
    site, shape_problems, broken = _validate_shapes(data)
    problems = [*shape_problems, *_check_references(site, broken)]
    if problems or document.problems:
        raise document.fail(problems)
    return Site(**site)


# --- shape of each item ---------------------------------------------------------------------------


def _validate_shapes(data: dict[str, Any]) -> tuple[dict[str, Any], list[Problem], dict[str, list[dict]]]:
    """Validate each item on its own; return the good ones, the problems, and the bad ones as raw dicts.

    The raw bad items let the reference checks stay quiet about what only looks wrong because of
    them (a reference to a broken zone, an entrance counted by a broken device).
    """
    problems: list[Problem] = []
    broken: dict[str, list[dict]] = {section: [] for section in SECTIONS}
    known = ("site", *SECTIONS)
    for key in data:
        if key not in known:
            problems.append(Problem((key,), unknown_field(str(key), known)))
    for key in REQUIRED_SECTIONS:
        if key not in data:
            problems.append(Problem((), f"missing section '{key}'"))

    site: dict[str, Any] = {}
    if "site" in data:
        try:
            site["site"] = SiteInfo.model_validate(data["site"])
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, SiteInfo, ("site",)))

    for section, model in SECTIONS.items():
        items = data.get(section)
        if items is None:
            site[section] = []
            continue
        if not isinstance(items, list):
            problems.append(Problem((section,), f"expected a list of {section}, got {describe(items)}"))
            site[section] = []
            continue
        good = []
        for index, item in enumerate(items):
            try:
                good.append(model.model_validate(item))
            except ValidationError as exc:
                problems.extend(pydantic_problems(exc, model, (section, index)))
                if isinstance(item, dict):
                    broken[section].append(item)
        site[section] = good
    return site, problems, broken


# --- references between items ---------------------------------------------------------------------


class _Refs:
    """Id lookups that say precisely what is wrong with a reference."""

    def __init__(self, site: dict[str, Any], broken: dict[str, list[dict]]) -> None:
        self.broken = broken
        self.broken_ids = {item.get("id") for items in broken.values() for item in items}
        self.zones: dict[str, Zone] = {}
        self.people: dict[str, Person] = {}
        self.entrances: dict[str, Entrance] = {}
        self.devices: dict[str, Device] = {}
        for section in ("zones", "people", "entrances", "devices"):
            for item in site[section]:
                getattr(self, section).setdefault(item.id, item)

    def unknown(self, kind: str, ref: str, table: dict[str, Any]) -> Optional[str]:
        """The message for a reference to nothing, or None when it is fine (or its target is broken)."""
        if ref in table or ref in self.broken_ids:
            return None
        hint = difflib.get_close_matches(ref, list(table), n=1)
        return f"unknown {kind} '{ref}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")


def _check_references(site: dict[str, Any], broken: dict[str, list[dict]]) -> Iterator[Problem]:
    refs = _Refs(site, broken)
    yield from _check_unique_ids(site)
    yield from _check_hierarchy(site["zones"], refs)
    yield from _check_zone_people_and_neighbours(site["zones"], refs)
    yield from _check_entrances(site, refs)
    yield from _check_devices_and_signs(site, refs)


def _check_unique_ids(site: dict[str, Any]) -> Iterator[Problem]:
    """Ids are unique across the whole site, so a notice's recipients and a topic are never ambiguous."""
    first: dict[str, str] = {}
    for section in SECTIONS:
        for index, item in enumerate(site[section]):
            where = f"{section}[{index}]"
            if item.id in first:
                yield Problem((section, index, "id"), f"duplicate id '{item.id}' (already used by {first[item.id]})")
            else:
                first[item.id] = where


def _check_hierarchy(zones: list[Zone], refs: _Refs) -> Iterator[Problem]:
    areas = [i for i, z in enumerate(zones) if z.kind == "area"]
    if not areas and zones:
        yield Problem(("zones",), "no zone of kind 'area': add one zone for the whole scenic area")
    for index in areas[1:]:
        yield Problem(
            ("zones", index, "kind"),
            f"a second zone of kind 'area' (the first is zones[{areas[0]}]); a site has exactly one",
        )

    for index, zone in enumerate(zones):
        loc = ("zones", index, "parent")
        wanted = PARENT_KIND[zone.kind]
        if zone.parent is None:
            if wanted is not None:
                yield Problem(loc, f"missing; {KIND_NAMES[zone.kind]} needs a parent of kind '{wanted}'")
            continue
        if wanted is None:
            yield Problem(loc, "the scenic area is the top of the hierarchy and has no parent")
            continue
        message = refs.unknown("zone", zone.parent, refs.zones)
        if message:
            yield Problem(loc, message)
            continue
        parent = refs.zones.get(zone.parent)
        if parent is not None and parent.kind != wanted:
            yield Problem(
                loc,
                f"'{zone.parent}' is {KIND_NAMES[parent.kind]} ('{parent.kind}'); "
                f"the parent of {KIND_NAMES[zone.kind]} must be of kind '{wanted}'",
            )

    yield from _check_cycles(zones, refs)
    children = {z.parent for z in zones}
    for index, zone in enumerate(zones):
        if zone.kind != "grid3" and zone.id not in children:
            below = "second-level grids" if zone.kind == "area" else "third-level grids"
            yield Problem(("zones", index), f"'{zone.id}' (kind '{zone.kind}') has no {below} under it")


def _check_cycles(zones: list[Zone], refs: _Refs) -> Iterator[Problem]:
    reported: set[str] = set()
    for index, zone in enumerate(zones):
        chain = [zone.id]
        current = zone
        while current.parent is not None and current.parent in refs.zones:
            if current.parent in chain:
                cycle = [*chain[chain.index(current.parent) :], current.parent]
                if not reported.intersection(cycle):
                    yield Problem(("zones", index, "parent"), f"cycle in the hierarchy: {' -> '.join(cycle)}")
                reported.update(cycle)
                break
            chain.append(current.parent)
            current = refs.zones[current.parent]


def _check_zone_people_and_neighbours(zones: list[Zone], refs: _Refs) -> Iterator[Problem]:
    for index, zone in enumerate(zones):
        is_grid = zone.kind in ("grid2", "grid3")
        if zone.officer is None:
            if is_grid:
                yield Problem(("zones", index, "officer"), "missing; every grid has a responsible police officer")
        else:
            yield from _check_person(("zones", index, "officer"), zone.officer, "officer", refs)
        if zone.kind == "grid3" and not zone.staff:
            yield Problem(
                ("zones", index, "staff"), "empty; every third-level grid has responsible staff to receive notices"
            )
        for j, person in enumerate(zone.staff):
            yield from _check_person(("zones", index, "staff", j), person, "staff", refs)

        seen: set[str] = set()
        for j, other in enumerate(zone.neighbours):
            loc = ("zones", index, "neighbours", j)
            message = refs.unknown("zone", other, refs.zones)
            if other == zone.id:
                yield Problem(loc, "a zone cannot be its own neighbour")
            elif other in seen:
                yield Problem(loc, f"'{other}' is listed twice")
            elif message:
                yield Problem(loc, message)
            elif other in refs.zones and refs.zones[other].kind != zone.kind:
                yield Problem(
                    loc,
                    f"'{other}' is {KIND_NAMES[refs.zones[other].kind]}; "
                    f"neighbours must be of the same kind ('{zone.kind}')",
                )
            seen.add(other)


def _check_person(loc: Loc, person_id: str, role: str, refs: _Refs) -> Iterator[Problem]:
    message = refs.unknown("person", person_id, refs.people)
    if message:
        yield Problem(loc, message)
        return
    person = refs.people.get(person_id)
    if person is not None and person.role != role:
        yield Problem(loc, f"'{person_id}' has role '{person.role}', not '{role}'")


def _check_entrances(site: dict[str, Any], refs: _Refs) -> Iterator[Problem]:
    counted = {d.entrance for d in site["devices"]} | {d.get("entrance") for d in refs.broken["devices"]}
    for index, entrance in enumerate(site["entrances"]):
        if entrance.zone is None:
            yield Problem(
                ("entrances", index, "zone"),
                "the entrance belongs to no zone: set 'zone' to the third-level grid that 'in' leads into",
            )
        for field in ("zone", "outside"):
            ref = getattr(entrance, field)
            if ref is None:
                continue
            message = refs.unknown("zone", ref, refs.zones)
            if message:
                yield Problem(("entrances", index, field), message)
            elif ref in refs.zones and refs.zones[ref].kind != "grid3":
                yield Problem(
                    ("entrances", index, field),
                    f"'{ref}' is {KIND_NAMES[refs.zones[ref].kind]}; entrances join third-level grids (kind 'grid3')",
                )
        if entrance.outside is not None and entrance.outside == entrance.zone:
            yield Problem(
                ("entrances", index, "outside"), "is the same zone as 'zone'; an entrance joins two different zones"
            )
        if entrance.id not in counted and entrance.id not in refs.broken_ids:
            yield Problem(("entrances", index), f"no device counts entrance '{entrance.id}': add one under devices")

    leaf_zones = {e.zone for e in site["entrances"]} | {e.outside for e in site["entrances"]}
    for index, zone in enumerate(site["zones"]):
        if zone.kind == "grid3" and zone.id not in leaf_zones:
            yield Problem(
                ("zones", index), f"third-level grid '{zone.id}' has no entrance, so its occupancy cannot be counted"
            )


def _check_devices_and_signs(site: dict[str, Any], refs: _Refs) -> Iterator[Problem]:
    for index, device in enumerate(site["devices"]):
        message = refs.unknown("entrance", device.entrance, refs.entrances)
        if message:
            yield Problem(("devices", index, "entrance"), message)
        names: set[str] = set()
        for j, line in enumerate(device.lines):
            if line.name in names:
                yield Problem(
                    ("devices", index, "lines", j, "name"), f"duplicate line name '{line.name}' on this device"
                )
            names.add(line.name)
        if device.view is not None:
            yield from _check_view(index, device, refs)

    for index, sign in enumerate(site["signs"]):
        message = refs.unknown("entrance", sign.entrance, refs.entrances)
        if message:
            yield Problem(("signs", index, "entrance"), message)
        message = refs.unknown("device", sign.device, refs.devices)
        if message:
            yield Problem(("signs", index, "device"), message)
            continue
        device = refs.devices.get(sign.device)
        if device is not None and device.entrance != sign.entrance:
            yield Problem(
                ("signs", index, "device"),
                f"'{sign.device}' is at entrance '{device.entrance}', not '{sign.entrance}'; "
                "a sign is driven by a device at its own entrance",
            )


def _check_view(index: int, device: Device, refs: _Refs) -> Iterator[Problem]:
    """A view is of a third-level zone (its people are what the zone's occupancy counts), seen by a camera."""
    assert device.view is not None
    loc = ("devices", index, "view", "zone")
    message = refs.unknown("zone", device.view.zone, refs.zones)
    zone = refs.zones.get(device.view.zone)
    if message:
        yield Problem(loc, message)
    elif zone is not None and zone.kind != "grid3":
        yield Problem(loc, f"'{device.view.zone}' is not a third-level grid; a view anchors a third-level grid")
    if device.source != "camera":
        message = "only a camera sees people in view: remove 'view', or set source: camera"
        yield Problem(("devices", index, "view"), message)
