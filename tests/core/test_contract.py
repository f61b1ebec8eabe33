"""The MQTT contract: topics, payload rules and limits, and the JSON Schema files other clients use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from lanewatch import contract as c
from tests.conftest import REPO, run_cli
from tests.samples import NOW, samples

SCHEMA_DIR = REPO / "docs" / "schema"
SCHEMA_FILE = {
    kind: f"{name}.schema.json"
    for kind, name in {
        "count": "count-window",
        "heartbeat": "heartbeat",
        "availability": "availability",
        "level": "level-state",
        "zone_notice": "diversion-notice",
        "entrance_notice": "diversion-notice",
        "fault": "device-fault",
        "status": "aggregator-status",
        "deadletter": "dead-letter",
        "headcount": "headcount",
        "reach": "reach-state",
        "forwarder": "forwarder-status",
    }.items()
}


def schema_for(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / SCHEMA_FILE[kind]).read_text(encoding="utf-8"))


def payload(kind: str, **changes: Any) -> bytes:
    """A sample payload of ``kind`` with some JSON fields changed (None deletes the field)."""
    data = json.loads(c.encode(samples()[kind]))
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data).encode()


def test_committed_schemas_match_the_models(tmp_path: Path) -> None:
    result = run_cli("contract", "schemas", "--check", "--out", str(SCHEMA_DIR))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(set(SCHEMA_FILE.values()))


@pytest.mark.parametrize("kind", list(c.KINDS))
def test_every_kind_round_trips_and_matches_its_schema(kind: str) -> None:
    message = samples()[kind]
    encoded = c.encode(message)
    jsonschema.validate(json.loads(encoded), schema_for(kind))
    assert c.decode(kind, encoded) == message


@pytest.mark.parametrize("kind", list(c.KINDS))
def test_topics_parse_back_to_their_kind_and_ids(kind: str) -> None:
    message = samples()[kind]
    entrance = "nanhou-north" if kind == "entrance_notice" else None
    topic = c.topic_for(message, entrance=entrance)
    parsed = c.parse_topic(topic)
    assert parsed.kind == kind
    assert parsed.ids["site"] == message.site
    assert topic.startswith("lanewatch/v1/sanfang-qixiang/")
    assert mqtt.topic_matches_sub(c.subscription(kind), topic)
    assert mqtt.topic_matches_sub(c.subscription(kind, site=message.site), topic)
    others = [k for k in c.KINDS if k != kind and not (kind.endswith("notice") and k.endswith("notice"))]
    assert not any(mqtt.topic_matches_sub(c.subscription(k), topic) for k in others)


@pytest.mark.parametrize(
    "topic",
    [
        "lanewatch/v2/sanfang-qixiang/devices/cam-a/heartbeat",
        "lanewatch/v1/sanfang-qixiang/devices/cam-a/heartbeat/extra",
        "lanewatch/v1/sanfang-qixiang/devices/Cam A/heartbeat",
        "lanewatch/v1/sanfang-qixiang/devices/+/heartbeat",
        "lanewatch/v1/sanfang-qixiang/cameras/cam-a/heartbeat",
    ],
)
def test_foreign_topics_are_refused(topic: str) -> None:
    with pytest.raises(c.ContractError, match="is not a LaneWatch lanewatch/v1 topic"):
        c.parse_topic(topic)


def test_shared_subscription_for_several_aggregators() -> None:
    assert c.subscription("count", share_group="aggregator") == "$share/aggregator/lanewatch/v1/+/devices/+/counts/+"


BAD_COUNTS = {
    "an image riding along": ({"jpeg": "/9j/4AAQSkZJRgABAQ"}, "jpeg: Extra inputs are not permitted"),
    "a box riding along": ({"boxes": [[10, 20, 40, 80]]}, "boxes: Extra inputs are not permitted"),
    "a track position": ({"track_xy": [320, 240]}, "track_xy: Extra inputs are not permitted"),
    "a count as text": ({"in": "12"}, "in: Input should be a valid integer"),
    "a negative count": ({"out": -1}, "out: Input should be greater than or equal to 0"),
    "an absurd count": ({"in": 10_001, "total_in": 60_000}, "in: Input should be less than or equal to 10000"),
    "a total smaller than the window": ({"total_in": 5}, "cumulative totals cannot be smaller"),
    "a time without a zone": ({"window_end": "2026-11-29T03:00:05"}, "window_end: Input should have timezone info"),
    "a window ending before it starts": (
        {"window_end": "2026-11-29T02:00:00Z"},
        "window_end must be after window_start",
    ),
    "a window over an hour": ({"window_start": "2026-11-29T01:00:00Z"}, "at most 3600 s long"),
    "a malformed boot id": ({"boot_id": "boot-1"}, "boot_id: String should match pattern"),
    "a missing sequence number": ({"seq": None}, "seq: Field required"),
    "a device id that is not an id": ({"device": "cam/../a"}, "device: String should match pattern"),
    "another protocol version": ({"v": 2}, "v: Input should be 1"),
}


@pytest.mark.parametrize("name", list(BAD_COUNTS))
def test_bad_count_payloads_are_rejected_by_both_the_model_and_the_schema(name: str) -> None:
    changes, reason = BAD_COUNTS[name]
    bad = payload("count", **changes)
    with pytest.raises(c.ContractError) as excinfo:
        c.decode("count", bad)
    assert reason in str(excinfo.value)
    cross_field = name in (
        "a total smaller than the window",
        "a window ending before it starts",
        "a window over an hour",
        "a time without a zone",
    )
    if not cross_field:  # JSON Schema cannot express rules between fields or check date-time formats by default
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(json.loads(bad), schema_for("count"))


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999", "-1e999"])
@pytest.mark.parametrize("field", ["uptime_s", "fps", "load1", "inference_ms", "cpu_temp_c"])
def test_numbers_that_are_not_finite_are_rejected(field: str, number: str) -> None:
    """Python's json, and many devices' encoders, write Infinity and NaN; 1e999 reads as infinity."""
    text = payload("heartbeat", **{field: 1.5}).decode().replace(f'"{field}": 1.5', f'"{field}": {number}')
    assert number in text
    with pytest.raises(c.ContractError, match=f"{field}: Input should be a finite number"):
        c.decode("heartbeat", text.encode())


def test_the_protocol_version_is_required_on_the_wire() -> None:
    data = json.loads(payload("heartbeat"))
    del data["v"]
    with pytest.raises(c.ContractError, match="v: the protocol version is required"):
        c.decode("heartbeat", json.dumps(data).encode())
    with pytest.raises(jsonschema.ValidationError, match="'v' is a required property"):
        jsonschema.validate(data, schema_for("heartbeat"))


@pytest.mark.parametrize("kind", list(c.KINDS))
def test_every_number_in_the_contract_is_bounded(kind: str) -> None:
    """Nothing a device sends can overflow what is computed from it: every number has both bounds."""
    schema = c.KINDS[kind].model.model_json_schema(by_alias=True)

    def numbers(node: object, where: str) -> list[tuple[str, dict]]:
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number") and "const" not in node and "enum" not in node:
                return [(where, node)]
            found = []
            for key, value in node.items():
                found += numbers(value, f"{where}.{key}")
            return found
        if isinstance(node, list):
            return [n for i, item in enumerate(node) for n in numbers(item, f"{where}[{i}]")]
        return []

    unbounded = [
        where for where, node in numbers(schema, kind)
        if not ({"minimum", "exclusiveMinimum"} & set(node) and {"maximum", "exclusiveMaximum"} & set(node))
    ]  # fmt: skip
    assert unbounded == []


def test_not_json_and_oversized_payloads_are_rejected() -> None:
    with pytest.raises(c.ContractError, match="Invalid JSON"):
        c.decode("count", b"\xff{not json")
    with pytest.raises(c.ContractError, match=f"the limit is {c.MAX_PAYLOAD_BYTES}"):
        c.decode("count", b" " * (c.MAX_PAYLOAD_BYTES + 1))


def test_the_largest_valid_notice_fits_the_payload_limit() -> None:
    """Every field is bounded, so no valid message can be refused for its size."""
    longest_id = "a" * 64
    ids = [longest_id] * c.MAX_IDS
    worst_text = "\x00" * c.MAX_TEXT  # control characters are the longest once JSON-escaped (6 bytes each)
    notice = c.DiversionNotice(
        site=longest_id,
        id="f" * 32,
        kind="predicted_red",
        zone=longest_id,
        level="unknown",
        previous_level="yellow",
        occupancy=c.MAX_TOTAL,
        capacity=c.MAX_TOTAL,
        trend="unknown",
        time=NOW,
        reason=worst_text,
        actions=c.Actions(meter_inbound=ids, close_inbound=ids, divert_to=ids),
        text=c.NoticeText(zh=worst_text, en=worst_text),
        to=ids,
    )
    assert len(c.encode(notice)) <= c.MAX_PAYLOAD_BYTES
    with pytest.raises(ValueError, match="at most 64 items"):
        c.Actions(divert_to=[*ids, "one-more"])


def test_timestamps_are_sent_in_utc() -> None:
    from datetime import timedelta, timezone

    beijing = timezone(timedelta(hours=8))
    level = samples()["level"].model_copy(update={})
    message = c.LevelState(**{**level.model_dump(), "time": NOW.astimezone(beijing)})
    assert json.loads(c.encode(message))["time"] == "2026-11-29T03:00:05.250000Z"


def test_topics_command_lists_every_kind() -> None:
    result = run_cli("contract", "topics", "--site", "sanfang-qixiang")
    assert result.exit_code == 0
    assert len(result.output.splitlines()) == len(c.KINDS)
    assert (
        "lanewatch/v1/sanfang-qixiang/devices/{device}/availability   Availability     QoS 1, retained" in result.output
    )


def test_protocol_doc_examples_are_valid_messages() -> None:
    """The examples in docs/protocol.md are what other clients copy: they must pass the contract."""
    doc = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    examples = re.findall(r"<!-- example: (\w+) -->\n```json\n(.*?)\n```", doc, flags=re.DOTALL)
    assert {kind for kind, _ in examples} == set(c.KINDS) - {"entrance_notice"}
    for kind, text in examples:
        jsonschema.validate(json.loads(text), schema_for(kind))
        assert c.decode(kind, text.encode()) == samples()[kind]
