"""Typed model of a site inventory: the one source of truth for zones, entrances and devices.

Each section is a flat list whose items point at each other by id (an entrance names its zone, a
device its entrance), so that adding an entrance is one edit and every reference can be checked.
The cross-reference rules live in ``lanewatch.site.inventory``; these classes only check the shape
of one item at a time.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lanewatch.ids import Id

ZoneKind = Literal["area", "grid2", "grid3"]
#: What each kind of zone may have as its parent: the scenic area contains second-level grids,
#: which contain third-level grids.
PARENT_KIND: dict[str, Optional[str]] = {"area": None, "grid2": "area", "grid3": "grid2"}
KIND_NAMES = {"area": "the scenic area", "grid2": "a second-level grid", "grid3": "a third-level grid"}

Role = Literal["officer", "staff", "technician", "control_room"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
#: the share of the people crossing that a camera counter misses or invents at the least, by chance, when its
#: rate is measured against a hand count (``bench/counting_accuracy.py``: 7 - 11 % missed, 2 - 4 % invented)
MEASURED_ERRS = 0.08


class PlanBox(BaseModel):
    """A rectangle on the site's plan, in fractions of the plan's width and height (0..1, y down)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: Fraction
    y: Fraction
    w: Fraction
    h: Fraction

    @model_validator(mode="after")
    def _inside(self) -> PlanBox:
        if self.w <= 0 or self.h <= 0 or self.x + self.w > 1.0001 or self.y + self.h > 1.0001:
            raise ValueError("a plan box needs w, h > 0 and must stay inside the plan (x + w <= 1, y + h <= 1)")
        return self


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Text(_Item):
    """A name or message in both languages the signs and staff use."""

    zh: str = Field(min_length=1, max_length=100)
    en: str = Field(min_length=1, max_length=100)


class SiteInfo(_Item):
    id: Id
    name: Text
    timezone: str = Field(description="IANA time zone of the site, e.g. Asia/Shanghai")
    closing_time: Optional[str] = Field(
        default=None,
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="local time (HH:MM) after which the area is empty; occupancies are reset to 0 then",
    )
    plan_image: Optional[str] = Field(
        default=None, max_length=500, description="a picture of the site's plan for the map's background (a URL)"
    )

    @field_validator("closing_time", mode="before")
    @classmethod
    def _quoted_time(cls, value: object) -> object:
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 23:00 as the number 1380
            raise ValueError('write the time in quotes, e.g. closing_time: "23:00"')
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
        return value


class Reach(_Item):
    """One way to reach a person's phone: a channel of the forwarder's configuration (`lanewatch alerts
    forward`), and their address there. Secrets (robot keys, gateway tokens) live in the forwarder's files."""

    channel: Id
    to: Optional[str] = Field(
        default=None,
        pattern=r"^\+?[0-9][0-9 -]{4,31}$",
        description="their mobile number: where an SMS goes, or whom a group robot's message mentions",
    )


class Person(_Item):
    """Someone who receives notices: a grid's officer or staff, a technician, the control room."""

    id: Id
    name: str = Field(min_length=1, max_length=100)
    role: Role
    notify: list[Reach] = Field(
        default_factory=list, description="their phone channels: each notice for them goes out on every one"
    )


class Zone(_Item):
    id: Id
    name: Text
    kind: ZoneKind
    parent: Optional[Id] = None
    capacity: int = Field(gt=0, description="instantaneous capacity in persons")
    area_m2: Optional[float] = Field(default=None, gt=0, description="walkable area in m²")
    neighbours: list[Id] = Field(
        default_factory=list, description="zones of the same kind that visitors can be sent to"
    )
    officer: Optional[Id] = None
    staff: list[Id] = Field(default_factory=list)
    plan: list[PlanBox] = Field(
        default_factory=list, description="where the zone lies on the site's plan: one box per lane or street"
    )


class Entrance(_Item):
    """A lane mouth where people are counted; ``in`` means walking into ``zone``."""

    id: Id
    name: Text
    zone: Optional[Id] = None  # Optional so that a missing zone gets its own, clearer error.
    outside: Optional[Id] = Field(
        default=None, description="the zone on the other side; omitted when it leads out of the scenic area"
    )
    width_m: Optional[float] = Field(default=None, gt=0)
    plan: Optional[tuple[Fraction, Fraction]] = Field(
        default=None, description="where the entrance is on the site's plan (x, y in fractions, y down)"
    )


class Measured(_Item):
    """How many of the people crossing a line its device counts, each way, measured by the technician at
    install against a hand count (``lanewatch agent tally`` beside the running agent prints it): the
    one measure of the counters' common scale besides staff headcounts, which no night can tell (counting
    every line 5 % short still leaves every zone empty at closing)."""

    rate_in: float = Field(gt=0.5, lt=1.5, description="device's count over the hand count, going in")
    rate_out: float = Field(gt=0.5, lt=1.5, description="device's count over the hand count, going out")
    crossings: int = Field(ge=20, description="people counted by hand in the quieter direction: how sure the rates are")

    def doubt(self, rate: float) -> float:
        """How far off a measured rate may be (relative standard deviation): each person counted by hand was
        missed or invented by the device by chance, at least ``MEASURED_ERRS`` of them."""
        return (max(abs(1.0 - rate), MEASURED_ERRS) / self.crossings) ** 0.5 / rate


class CountingLine(_Item):
    """A line in the camera image, in fractions of its width and height (resolution independent).

    ``in`` is motion along (y2-y1, -(x2-x1)) in image coordinates (y down): for a line drawn top to
    bottom, left to right is ``in``.
    """

    name: Id
    start: tuple[Fraction, Fraction]
    end: tuple[Fraction, Fraction]
    measured: Optional[Measured] = Field(
        default=None, description="its counting rates measured at install: the drift correction starts from them"
    )

    @model_validator(mode="after")
    def _has_length(self) -> CountingLine:
        if self.start == self.end:
            raise ValueError("start and end are the same point; a counting line needs two distinct points")
        return self


class View(_Item):
    """What part of a third-level zone a camera sees: its ``in_view`` (people inside its region of interest)
    is about ``share`` of the zone's people. The technician's estimate (the region's walkable area over the
    zone's, from the calibration picture); the aggregator refines it from the data and staff headcounts."""

    zone: Id
    share: float = Field(gt=0, le=1, description="the share of the zone's people the region of interest holds")


class Device(_Item):
    id: Id
    entrance: Id
    hardware: str = Field(min_length=1, max_length=80)
    source: Literal["camera", "serial_counter"] = "camera"
    lines: list[CountingLine] = Field(min_length=1)
    view: Optional[View] = Field(default=None, description="the part of a zone the camera sees, an absolute anchor")


class Sign(_Item):
    """A variable-message sign at an entrance, driven over serial by a device at that entrance."""

    id: Id
    entrance: Id
    device: Id
    languages: list[Literal["zh", "en"]] = Field(default=["zh", "en"], min_length=1)


class Site(_Item):
    """A whole checked inventory; build it with ``lanewatch.site.load_site``, which checks references."""

    site: SiteInfo
    people: list[Person] = Field(default_factory=list)
    zones: list[Zone]
    entrances: list[Entrance]
    devices: list[Device]
    signs: list[Sign] = Field(default_factory=list)

    @cached_property
    def zones_by_id(self) -> dict[str, Zone]:
        return {z.id: z for z in self.zones}

    @cached_property
    def root(self) -> Zone:
        return next(z for z in self.zones if z.kind == "area")

    def zone(self, zone_id: str) -> Zone:
        return self.zones_by_id[zone_id]

    def person(self, person_id: str) -> Person:
        return next(p for p in self.people if p.id == person_id)

    def children(self, zone_id: str) -> list[Zone]:
        return [z for z in self.zones if z.parent == zone_id]

    def contains(self, zone_id: str, other_id: Optional[str]) -> bool:
        """True when ``other_id`` is ``zone_id`` or lies inside it; None (outside the area) never does."""
        while other_id is not None:
            if other_id == zone_id:
                return True
            other_id = self.zone(other_id).parent
        return False

    def boundary_entrances(self, zone_id: str) -> list[tuple[Entrance, int]]:
        """The entrances on a zone's boundary, with +1 where ``in`` enters the zone, -1 where it leaves.

        A zone's occupancy is the signed sum of (in - out) over these. Entrances between two of its
        own sub-zones are inside it and cancel, which is why a parent's occupancy is the sum of
        its children's.
        """
        result = []
        for entrance in self.entrances:
            into = self.contains(zone_id, entrance.zone)
            from_inside = self.contains(zone_id, entrance.outside)
            if into and not from_inside:
                result.append((entrance, 1))
            elif from_inside and not into:
                result.append((entrance, -1))
        return result

    def devices_at(self, entrance_id: str) -> list[Device]:
        return [d for d in self.devices if d.entrance == entrance_id]

    def signs_at(self, entrance_id: str) -> list[Sign]:
        return [s for s in self.signs if s.entrance == entrance_id]
