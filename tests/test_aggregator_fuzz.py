"""Thousands of malformed messages at a running aggregator: it stays up, rejects each with a reason, and
stores the valid stream beside them whole.

Every generated message breaks the contract in a way the generator knows for sure (so the test can
expect exactly one rejection per message): garbage bytes, a missing or retyped field, an unknown
field, a value out of bounds, ids that disagree with the topic, an unknown device or topic, a device
clock far off, an oversized payload.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import traffic
from lanewatch import contract as c
from lanewatch.services import InfluxDB, Mosquitto
from lanewatch.site import load_site
from tests.aggregators import AggregatorProcess, all_stored, expected_totals, stored_totals
from tests.conftest import EXAMPLE_SITE, wait_until
from tests.test_aggregator_service import publish, status_of

SITE = load_site(EXAMPLE_SITE)
DEVICES = [d.id for d in SITE.devices]
ROOT = "lanewatch/v1/sanfang-qixiang/devices"
INT_FIELDS = {
    "count": ["seq", "in", "out", "total_in", "total_out", "in_view"],
    "heartbeat": ["dropped_frames", "outbox_depth", "outbox_dropped"],
}
FLOAT_FIELDS = {"count": [], "heartbeat": ["uptime_s", "fps", "load1"]}
STRING_FIELDS = {"count": ["site", "device", "line", "boot_id", "model", "agent_version"],
                 "heartbeat": ["site", "device", "boot_id", "camera", "sign"]}  # fmt: skip
TIME_FIELDS = {"count": ["window_start", "window_end"], "heartbeat": ["time"]}


def valid(kind: str, device: str) -> tuple[str, dict[str, Any]]:
    """A valid message of ``kind`` from ``device`` now, as a topic and a JSON object to break."""
    now = datetime.now(timezone.utc)
    line = next(d.lines[0].name for d in SITE.devices if d.id == device)
    sim = traffic.SimulatedDevice("sanfang-qixiang", device, [line], random.Random(1))
    message: c.Message = sim.window(line, now, 5.0, 3) if kind == "count" else sim.heartbeat(now)
    return c.topic_for(message), json.loads(c.encode(message))


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["count", "heartbeat"]))
    device = draw(st.sampled_from(DEVICES))
    topic, data = valid(kind, device)
    fault = draw(st.sampled_from([
        "garbage", "drop", "int-retype", "float-retype", "string-retype", "time-retype", "extra", "negative",
        "too-big", "device-mismatch", "unknown-device", "unknown-topic", "future", "past", "oversize",
        "totals-below-window",
    ]))  # fmt: skip
    if fault == "garbage":
        raw = draw(st.binary(max_size=300))
        return topic, raw if raw[:1] != b"{" else b"x" + raw
    if fault == "drop":
        required = c.KINDS[kind].model.model_json_schema(by_alias=True)["required"]  # the rest have defaults
        del data[draw(st.sampled_from(sorted(set(data) & set(required))))]
    elif fault == "int-retype":
        fraction = st.sampled_from([0.5, 1.25, -2.75, 1e-3])  # strict: 12.0 is not an integer either
        value = draw(
            st.one_of(st.text(max_size=5), fraction, st.booleans(), st.none(), st.lists(st.integers(), max_size=2))
        )
        data[draw(st.sampled_from(INT_FIELDS[kind]))] = value
    elif fault == "float-retype" and FLOAT_FIELDS[kind]:
        data[draw(st.sampled_from(FLOAT_FIELDS[kind]))] = draw(st.one_of(st.text(max_size=5), st.booleans(), st.none()))
    elif fault in ("string-retype", "float-retype"):
        value = draw(st.one_of(st.integers(), st.none(), st.booleans(), st.lists(st.text(max_size=3), max_size=2)))
        data[draw(st.sampled_from(STRING_FIELDS[kind]))] = value
    elif fault == "time-retype":
        data[draw(st.sampled_from(TIME_FIELDS[kind]))] = draw(st.one_of(
            st.integers(), st.text(max_size=12), st.just("2026-11-29T10:00:00")))  # no zone  # fmt: skip
    elif fault == "extra":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in data))
        data[name] = draw(st.one_of(st.integers(), st.text(max_size=20)))
    elif fault == "negative":
        data[draw(st.sampled_from(INT_FIELDS[kind]))] = draw(st.integers(max_value=-1))
    elif fault == "too-big":
        data[draw(st.sampled_from(INT_FIELDS[kind]))] = draw(st.integers(min_value=2**53))
    elif fault == "device-mismatch":
        data["device"] = draw(st.sampled_from([d for d in DEVICES if d != device]))
    elif fault == "unknown-device":
        ghost = f"ghost-{draw(st.integers(0, 10**6))}"
        data["device"] = ghost
        topic = topic.replace(f"/devices/{device}/", f"/devices/{ghost}/")
    elif fault == "unknown-topic":
        topic = f"{ROOT}/{device}/{draw(st.sampled_from(['firmware', 'counts', 'log/debug', 'status']))}"
    elif fault == "future" and kind == "heartbeat":  # a clock ahead is measured and corrected, unless absurd
        data["time"] = (datetime.fromisoformat(data["time"].replace("Z", "+00:00")) + timedelta(days=9)).isoformat()
    elif fault in ("future", "past"):
        shift = timedelta(hours=draw(st.integers(1, 1000))) if fault == "future" else -timedelta(days=9)
        for name in TIME_FIELDS[kind]:
            data[name] = (datetime.fromisoformat(data[name].replace("Z", "+00:00")) + shift).isoformat()
    elif fault == "oversize":
        data["model" if kind == "count" else "camera"] = "x" * (c.MAX_PAYLOAD_BYTES + draw(st.integers(0, 1000)))
    elif fault == "totals-below-window" and kind == "count":
        data["in"], data["total_in"] = 50, 10
    else:  # a heartbeat has no window: make its camera state one that does not exist
        data["camera"] = "sleeping"
    return topic, encode(data)


class DeadLetters:
    def __init__(self, broker: Mosquitto) -> None:
        self.reasons: list[str] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(c.subscription("deadletter", site=SITE.site.id), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        letter = c.decode("deadletter", message.payload)
        assert isinstance(letter, c.DeadLetter)
        with self._lock:
            self.reasons.append(letter.reason)

    def count(self) -> int:
        with self._lock:
            return len(self.reasons)


@pytest.fixture(scope="module")
def running(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AggregatorProcess, DeadLetters, str]]:
    database = f"fuzz{uuid.uuid4().hex[:8]}"
    aggregator = AggregatorProcess(tmp_path_factory.mktemp("fuzz"), mosquitto, influxdb, database,
                                   instance="agg-fuzz", share_group="g-fuzz")  # fmt: skip
    letters = DeadLetters(mosquitto)
    aggregator.start().wait_connected()
    yield aggregator, letters, database
    letters.client.disconnect()
    letters.client.loop_stop()
    assert aggregator.stop() == 0
    aggregator.cleanup()


FLEET = traffic.devices(SITE, seed=7)
SENT = {"messages": 0, "malformed": 0}


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(bad=st.lists(malformed(), min_size=250, max_size=250), seed=st.integers(0, 2**16))
def test_malformed_messages_are_rejected_one_by_one_and_the_valid_stream_is_stored_whole(
    running: tuple[AggregatorProcess, DeadLetters, str], mosquitto: Mosquitto, influxdb: InfluxDB,
    bad: list[tuple[str, bytes]], seed: int,
) -> None:  # fmt: skip
    aggregator, letters, database = running
    good = list(traffic.stream(FLEET, 3, start=datetime.now(timezone.utc) - timedelta(minutes=1)))
    mixed = good + bad
    random.Random(seed).shuffle(mixed)  # malformed and valid messages interleaved
    publish(mosquitto, mixed)
    SENT["messages"] += len(mixed)
    SENT["malformed"] += len(bad)
    assert wait_until(lambda: status_of(mosquitto, "agg-fuzz").stored == SENT["messages"], 60), aggregator.log()[-2000:]
    status = status_of(mosquitto, "agg-fuzz")
    assert status.rejected == SENT["malformed"]  # each one, no more, no less
    assert wait_until(lambda: letters.count() == SENT["malformed"], 30)
    assert all(reason.strip() for reason in letters.reasons)
    assert wait_until(lambda: all_stored(influxdb, database, FLEET), 30), (
        stored_totals(influxdb, database),
        expected_totals(FLEET),
    )
    assert aggregator.process is not None
    assert aggregator.process.poll() is None  # still up


def test_the_fuzzer_covered_thousands(running: tuple[AggregatorProcess, DeadLetters, str]) -> None:
    """Runs after the fuzz test in this module: it threw thousands, and the log has one line per rejection."""
    aggregator, letters, _database = running
    assert SENT["malformed"] >= 3000
    assert aggregator.log().count(" rejected ") == SENT["malformed"]
    assert letters.count() == SENT["malformed"]
