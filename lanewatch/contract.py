"""The MQTT contract between the devices, the aggregator and the notice receivers (protocol v1).

Both sides import this one module, so a topic or a field cannot drift between them. Other clients
get the same rules from the JSON Schema files generated from these models (``lanewatch contract
schemas``) and from ``docs/protocol.md``.

Rules that make delivery safe to repeat:
- every count message carries the device's cumulative totals plus (boot id, sequence number), so a
  message replayed, duplicated or delivered out of order can be recognised and never changes a total;
- payloads are closed: an unknown field is an error, so nothing else (an image, a box, a track
  position) can ride along with the counts;
- every payload is compact UTF-8 JSON of at most ``MAX_PAYLOAD_BYTES``;
- every number is finite and bounded (no ``Infinity``, ``NaN`` or ``1e999``), and ``v`` is required:
  nothing a device sends can overflow what is computed from it.
"""

from __future__ import annotations

import json
import re
from datetime import timezone
from typing import Annotated, Literal, NamedTuple, Optional

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from lanewatch.ids import ID_PATTERN, Id

PROTOCOL_VERSION = 1
TOPIC_ROOT = f"lanewatch/v{PROTOCOL_VERSION}"

#: Hard limits, enforced on both sides. A payload over the size limit is rejected before parsing;
#: every field below is bounded so that even the largest valid notice fits (a test checks it).
MAX_PAYLOAD_BYTES = 32 * 1024
MAX_WINDOW_SECONDS = 3600
#: People crossing one line in one window; 10,000 in an hour is beyond any lane's physical flow.
MAX_WINDOW_COUNT = 10_000
#: Largest integer every JSON implementation reads exactly (2**53 - 1).
MAX_TOTAL = 9_007_199_254_740_991
MAX_IN_VIEW = 1000
MAX_TEXT = 500
MAX_IDS = 64
#: Longer than any device stays up, or any lag a status can report (ten years, in seconds).
MAX_SECONDS = 10 * 366 * 86_400
#: MQTT's own limit on a payload.
MAX_MQTT_PAYLOAD = 268_435_455
#: What devices do unless configured otherwise: a count window per line every 5 s, a heartbeat every 30 s.
DEFAULT_WINDOW_S = 5.0
DEFAULT_HEARTBEAT_S = 30.0

#: A random 128-bit id in lowercase hex (``uuid.uuid4().hex``): boot ids and notice ids.
Hex128 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]

#: A time with a zone, kept in UTC so that the JSON always reads ...Z (a time without a zone is an error).
Timestamp = Annotated[AwareDatetime, AfterValidator(lambda value: value.astimezone(timezone.utc))]

Level = Literal["green", "yellow", "red", "unknown"]


class ContractError(ValueError):
    """A payload or topic that breaks the contract; the message says which rule."""


def _require_version(schema: dict) -> None:
    """``v`` is required on the wire (``decode`` checks it), though models built in Python default it."""
    schema["required"] = ["v", *[name for name in schema.get("required", []) if name != "v"]]


class Message(BaseModel):
    """What every payload has: closed, strict, versioned, for one site."""

    # strict: JSON types must match exactly ("5" is not 5); extra="forbid": closed payloads;
    # allow_inf_nan=False: Infinity, NaN and 1e999 are not numbers.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=True,
        allow_inf_nan=False,
        json_schema_extra=_require_version,
    )

    v: Literal[1] = Field(default=1, description="protocol version (required)")
    site: Id = Field(description="site id from the inventory; must equal the id in the topic")


class CountWindow(Message):
    """People who crossed one counting line during one window.

    The aggregator deduplicates on (device, boot_id, seq). ``total_in``/``total_out`` are the line's
    cumulative counts since the device was commissioned (persisted on the device across reboots);
    they let the receiver detect gaps and rebuild state without trusting delivery order.
    """

    device: Id
    line: Id
    boot_id: Hex128 = Field(description="new at every start of the agent")
    seq: int = Field(
        ge=0, le=MAX_TOTAL, description="0, 1, 2 ... for every count message of this boot, all lines together"
    )
    window_start: Timestamp
    window_end: Timestamp
    in_: int = Field(
        alias="in", ge=0, le=MAX_WINDOW_COUNT, description="crossings in the 'in' direction during the window"
    )
    out: int = Field(ge=0, le=MAX_WINDOW_COUNT, description="crossings in the 'out' direction during the window")
    total_in: int = Field(ge=0, le=MAX_TOTAL)
    total_out: int = Field(ge=0, le=MAX_TOTAL)
    in_view: int = Field(
        ge=0, le=MAX_IN_VIEW, description="people inside the camera's region of interest at window end"
    )
    model: str = Field(min_length=1, max_length=64, description="detector model, e.g. ssd_mobilenet_v1")
    agent_version: str = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _consistent(self) -> CountWindow:
        length = (self.window_end - self.window_start).total_seconds()
        if not 0 < length <= MAX_WINDOW_SECONDS:
            raise ValueError(
                f"window_end must be after window_start and the window at most {MAX_WINDOW_SECONDS} s long"
            )
        if self.total_in < self.in_ or self.total_out < self.out:
            raise ValueError("cumulative totals cannot be smaller than the window's own counts")
        return self


CameraState = Literal["ok", "reconnecting", "failed", "none"]
SignState = Literal["ok", "failed", "none"]


class Heartbeat(Message):
    """A device's health every 30 s (configurable); a missing heartbeat makes its zone unknown."""

    device: Id
    boot_id: Hex128 = Field(description="new at every start of the agent")
    time: Timestamp
    uptime_s: float = Field(ge=0, le=MAX_SECONDS)
    fps: float = Field(ge=0, le=1000)
    inference_ms: Optional[float] = Field(ge=0, le=60_000)
    dropped_frames: int = Field(ge=0, le=MAX_TOTAL, description="frames skipped since boot because inference was busy")
    cpu_temp_c: Optional[float] = Field(ge=-40, le=150)
    load1: float = Field(ge=0, le=1000)
    outbox_depth: int = Field(ge=0, le=MAX_TOTAL, description="messages waiting for the broker's acknowledgement")
    outbox_dropped: int = Field(
        ge=0, le=MAX_TOTAL, description="messages dropped by the outbox bounds since commissioning"
    )
    camera: CameraState
    storage: Literal["ok", "full"] = Field(
        default="ok", description="full: the disk under the outbox is full; counts are sent from memory, not stored"
    )
    sign: SignState
    clock_synced: Optional[bool] = Field(description="system clock synchronised (NTP); null when unknown")


class Availability(Message):
    """Retained ``online`` on connect; the broker publishes the Last Will ``offline`` when the device dies."""

    device: Id
    state: Literal["online", "offline"]
    boot_id: Hex128 = Field(description="new at every start of the agent")


class LevelState(Message):
    """A zone's current crowd level, retained so a receiver that connects late sees it at once."""

    zone: Id
    level: Level
    occupancy: Optional[int] = Field(ge=0, le=MAX_TOTAL, description="persons; null when unknown")
    band: Optional[int] = Field(
        default=None, ge=0, le=MAX_TOTAL, description="how far off occupancy may be (one standard deviation, persons)"
    )
    capacity: int = Field(gt=0, le=MAX_TOTAL)
    density: Optional[float] = Field(ge=0, le=100, description="persons/m² where the zone's area is known")
    coverage: float = Field(ge=0, le=1, description="share of the zone's boundary entrances reporting")
    since: Timestamp = Field(description="when the zone entered this level")
    time: Timestamp
    reason: str = Field(max_length=MAX_TEXT)


class Actions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    meter_inbound: list[Id] = Field(default_factory=list, max_length=MAX_IDS, description="entrances to meter inbound")
    close_inbound: list[Id] = Field(default_factory=list, max_length=MAX_IDS, description="entrances to close inbound")
    divert_to: list[Id] = Field(
        default_factory=list, max_length=MAX_IDS, description="neighbouring zones with spare capacity"
    )


class NoticeText(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    zh: str = Field(min_length=1, max_length=MAX_TEXT)
    en: str = Field(min_length=1, max_length=MAX_TEXT)


class DiversionNotice(Message):
    """What grid staff and entrance signs must do now (QoS 1, one per level change or forecast)."""

    id: Hex128 = Field(description="receivers deduplicate on it")
    kind: Literal["level_change", "predicted_red"]
    zone: Id
    level: Level
    previous_level: Level
    occupancy: Optional[int] = Field(ge=0, le=MAX_TOTAL)
    band: Optional[int] = Field(
        default=None, ge=0, le=MAX_TOTAL, description="how far off occupancy may be (one standard deviation, persons)"
    )
    capacity: int = Field(gt=0, le=MAX_TOTAL)
    trend: Literal["rising", "steady", "falling", "unknown"]
    time: Timestamp
    reason: str = Field(max_length=MAX_TEXT)
    actions: Actions
    text: NoticeText
    to: list[Id] = Field(max_length=MAX_IDS, description="receivers: people and signs, by inventory id")


class DeviceFault(Message):
    """A device the aggregator cannot count on (or can again), retained per device, for the technicians."""

    device: Id
    entrance: Id
    zones: list[Id] = Field(
        max_length=MAX_IDS,
        description="zones whose level is unknown without it "
        "(none for disk_full, clock_off, bad_data and miscounting: it still counts)",
    )
    problem: Literal[
        "offline", "silent", "camera_failed", "disk_full", "clock_off", "bad_data", "miscounting", "recovered"
    ] = Field(
        description="bad_data: the centre rejects what it sends (see the dead letters), it still counts otherwise; "
        "miscounting: the nights' evidence says it counts far from the truth (its counts are corrected)"
    )
    since: Timestamp
    time: Timestamp
    text: NoticeText
    to: list[Id] = Field(max_length=MAX_IDS, description="the technicians, by inventory id")


class AggregatorStatus(Message):
    """An aggregator instance's own health, retained, every few seconds (counters since it started)."""

    instance: Id
    time: Timestamp
    started: Timestamp
    processed: int = Field(ge=0, le=MAX_TOTAL, description="messages taken from the broker")
    stored: int = Field(ge=0, le=MAX_TOTAL, description="messages whose data is in the database")
    rejected: int = Field(ge=0, le=MAX_TOTAL, description="messages that broke the contract (see the dead letters)")
    deduplicated: int = Field(ge=0, le=MAX_TOTAL, description="count windows seen before (QoS 1 redeliveries, replays)")
    spooled: int = Field(ge=0, le=MAX_TOTAL, description="points waiting in the local spool for the database")
    lag_s: Optional[float] = Field(
        ge=0, le=MAX_SECONDS, description="seconds from a window's end on the device to its storage here (latest)"
    )
    database: Literal["ok", "unreachable", "refused"]


class ReachState(Message):
    """Whether the notices reach a person on their phone channels (retained per person, by the forwarder):
    the control room sees who cannot be reached, and since when."""

    person: Id
    time: Timestamp
    state: Literal["reached", "unreachable"] = Field(
        description="unreachable: a notice for them is still not delivered on any of their channels after "
        "the forwarder's unreachable_after_s"
    )
    since: Timestamp = Field(description="when this state began")
    pending: int = Field(ge=0, le=MAX_TOTAL, description="notices for them not delivered yet")
    delivered: int = Field(ge=0, le=MAX_TOTAL, description="deliveries to them since the forwarder's state began")
    last_notice: Optional[Hex128] = None
    error: str = Field(default="", max_length=MAX_TEXT, description="the last channel's error, when unreachable")


class ForwarderStatus(Message):
    """The forwarder's own state, retained: ``online`` with its figures every minute, and ``offline`` from
    its Last Will when it dies, so that nobody takes a silent phone for a calm site."""

    instance: Id
    state: Literal["online", "offline"]
    time: Optional[Timestamp] = Field(default=None, description="when published (none in the Last Will)")
    pending: int = Field(default=0, ge=0, le=MAX_TOTAL, description="deliveries not made yet")
    failing: list[Id] = Field(default_factory=list, max_length=MAX_IDS, description="channels whose last send failed")
    unreachable: list[Id] = Field(default_factory=list, max_length=MAX_IDS, description="people reported unreachable")


class Headcount(Message):
    """People a grid officer or staff member counted in one of their third-level zones: an anchor for
    its occupancy (published by that person, under the ACL that scopes them to their grids)."""

    zone: Id
    person: Id = Field(description="who counted, by inventory id (also in the topic)")
    count: int = Field(ge=0, le=1_000_000, description="persons counted in the zone")
    time: Timestamp = Field(description="when they were counted")
    note: str = Field(default="", max_length=MAX_TEXT)


class DeadLetter(Message):
    """A message the aggregator rejected, kept for whoever must fix its sender."""

    time: Timestamp
    instance: Id
    topic: str = Field(max_length=1024)
    reason: str = Field(max_length=MAX_TEXT)
    payload_b64: str = Field(max_length=16_384, description="the payload (base64), cut to its first 12 KiB")
    payload_bytes: int = Field(ge=0, le=MAX_MQTT_PAYLOAD, description="the payload's full size")


# --- topics ---------------------------------------------------------------------------------------


class Kind(NamedTuple):
    """One message kind: its model, topic template, and how it is published."""

    model: type[Message]
    template: str
    retained: bool


#: Every topic is ``lanewatch/v1/<site>/...``; ids never contain '/', '+' or '#'.
KINDS: dict[str, Kind] = {
    "count": Kind(CountWindow, TOPIC_ROOT + "/{site}/devices/{device}/counts/{line}", False),
    "heartbeat": Kind(Heartbeat, TOPIC_ROOT + "/{site}/devices/{device}/heartbeat", False),
    "availability": Kind(Availability, TOPIC_ROOT + "/{site}/devices/{device}/availability", True),
    "level": Kind(LevelState, TOPIC_ROOT + "/{site}/zones/{zone}/level", True),
    "zone_notice": Kind(DiversionNotice, TOPIC_ROOT + "/{site}/zones/{zone}/notices", False),
    "entrance_notice": Kind(DiversionNotice, TOPIC_ROOT + "/{site}/entrances/{entrance}/notices", False),
    "fault": Kind(DeviceFault, TOPIC_ROOT + "/{site}/faults/{device}", True),
    "status": Kind(AggregatorStatus, TOPIC_ROOT + "/{site}/aggregator/{instance}/status", True),
    "deadletter": Kind(DeadLetter, TOPIC_ROOT + "/{site}/aggregator/{instance}/deadletter", False),
    "headcount": Kind(Headcount, TOPIC_ROOT + "/{site}/headcounts/{zone}/{person}", False),
    "reach": Kind(ReachState, TOPIC_ROOT + "/{site}/people/{person}/reach", True),
    "forwarder": Kind(ForwarderStatus, TOPIC_ROOT + "/{site}/forwarder/{instance}/status", True),
}
QOS = 1
#: Heartbeats are published with this MQTT v5 Message Expiry Interval: stale health is never delivered,
#: and a heartbeat's time against its arrival measures the device's clock within about a minute.
HEARTBEAT_EXPIRY_S = 60


def topic_for(message: Message, entrance: Optional[str] = None) -> str:
    """The topic a message is published on. A notice goes to its zone, or to one entrance's sign."""
    if isinstance(message, DiversionNotice):
        if entrance is not None:
            return KINDS["entrance_notice"].template.format(site=message.site, entrance=entrance)
        return KINDS["zone_notice"].template.format(site=message.site, zone=message.zone)
    ids = {name: getattr(message, name, None) for name in ("device", "line", "zone", "instance", "person")}
    return KINDS[kind_of(message)].template.format(site=message.site, **ids)


def kind_of(message: Message) -> str:
    return next(name for name, kind in KINDS.items() if type(message) is kind.model)


def subscription(kind: str, site: str = "+", share_group: Optional[str] = None) -> str:
    """A topic filter for every message of one kind, optionally in an MQTT v5 shared group."""
    filter_ = re.sub(r"\{(?!site\})\w+\}", "+", KINDS[kind].template).format(site=site)
    return f"$share/{share_group}/{filter_}" if share_group else filter_


def _topic_regex(template: str) -> re.Pattern:
    """Every ``{name}`` in a template becomes a named group matching an id."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{ID_PATTERN[1:-1]})" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


_TOPIC_PATTERNS = {name: _topic_regex(kind.template) for name, kind in KINDS.items()}


class ParsedTopic(NamedTuple):
    kind: str
    ids: dict[str, str]


def parse_topic(topic: str) -> ParsedTopic:
    """Which kind of message a topic carries, and the ids in it; ContractError if it is not ours."""
    for name, pattern in _TOPIC_PATTERNS.items():
        match = pattern.match(topic)
        if match:
            return ParsedTopic(name, match.groupdict())
    raise ContractError(f"topic {topic!r} is not a LaneWatch {TOPIC_ROOT} topic")


# --- payloads -------------------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """Compact UTF-8 JSON, checked against the size limit before anything is sent."""
    payload = message.model_dump_json(by_alias=True).encode("utf-8")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(
            f"{type(message).__name__} payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )
    return payload


def decode(kind: str, payload: bytes) -> Message:
    """Parse and check one payload of a known kind; ContractError names the first rule it breaks."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    try:
        message = KINDS[kind].model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ContractError(f"{where}: {first['msg']}{more}") from None
    if "v" not in message.model_fields_set:
        raise ContractError(f"v: the protocol version is required (this is v{PROTOCOL_VERSION})")
    return message


def json_schemas() -> dict[str, dict]:
    """The JSON Schema (draft 2020-12) of every message model, keyed by file name."""
    schemas = {}
    for model in dict.fromkeys(kind.model for kind in KINDS.values()):
        schema = model.model_json_schema(by_alias=True)
        name = re.sub(r"(?<!^)(?=[A-Z])", "-", model.__name__).lower()
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:lanewatch:v{PROTOCOL_VERSION}:{name}",
            **schema,
            "x-lanewatch-max-bytes": MAX_PAYLOAD_BYTES,
        }
        schemas[f"{name}.schema.json"] = schema
    return schemas


def schema_text(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
