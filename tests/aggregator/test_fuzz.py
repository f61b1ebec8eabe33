"""Ten thousand malformed messages at a running aggregator, through the broker a site runs: it stays up,
rejects each with a reason, and stores the valid stream beside them whole.

Every generated message breaks the contract in a way the generator knows for sure (so the test can
expect exactly one rejection per message): garbage bytes, a missing or retyped field, an unknown
field, a value out of bounds, a number that is not finite (Infinity, NaN, 1e999), no protocol version,
ids that disagree with the topic, an unknown topic, a device clock far off, an oversized payload,
cumulative totals that jump (to 2^53 - 1, or by tens of thousands in seconds). Each is sent by a
device logged in as itself; what a device may not publish at all (another device's topics) the
broker refuses, and the publisher sees the refusal: either way, nothing is taken without a word.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness import simulated
from harness.servers import InfluxDB, Mosquitto
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.aggregator.test_service import status_of
from tests.aggregators import AggregatorProcess, all_stored, expected_totals, stored_totals
from tests.conftest import EXAMPLE_SITE, close, connected, wait_until

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
    sim = simulated.SimulatedDevice("sanfang-qixiang", device, [line], random.Random(1))
    message: c.Message = sim.window(line, now, 5.0, 3) if kind == "count" else sim.heartbeat(now)
    return c.topic_for(message), json.loads(c.encode(message))


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


FLEET = simulated.devices(SITE, seed=7)
JUMPS = itertools.count(1)  # each jump differs from every other by thousands: never two alike


def jumped(device: str) -> tuple[str, bytes]:
    """A window of the fleet's own device and boot whose totals moved further than its entrance can pass
    people since the line's last window: to 2^53 - 1, or by tens of thousands, in or out."""
    sim = next(d for d in FLEET if d.device == device)
    line = sim.lines[0]
    total_in, total_out = sim.totals.get(line, [0, 0])
    n = next(JUMPS)
    variant = n % 3
    jump_in = c.MAX_TOTAL - 10_000 * n - total_in if variant == 0 else 20_000 + 1000 * n if variant == 1 else 0
    jump_out = 20_000 + 1000 * n if variant == 2 else 0
    now = datetime.now(timezone.utc)
    window = c.CountWindow(
        site=SITE.site.id, device=device, line=line, boot_id=sim.boot_id, seq=10**9 + n,
        window_start=now - timedelta(seconds=5), window_end=now, in_=1, out=0,
        total_in=total_in + 1 + jump_in, total_out=total_out + jump_out, in_view=0, model="m", agent_version="fuzz",
    )  # fmt: skip
    return c.topic_for(window), c.encode(window)


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["count", "heartbeat"]))
    device = draw(st.sampled_from(DEVICES))
    topic, data = valid(kind, device)
    fault = draw(st.sampled_from([
        "garbage", "drop", "int-retype", "float-retype", "string-retype", "time-retype", "extra", "negative",
        "too-big", "device-mismatch", "unknown-device", "unknown-topic", "future", "past", "oversize",
        "totals-below-window", "not-finite", "no-version", "totals-jump",
    ]))  # fmt: skip
    if fault == "totals-jump":
        return jumped(device)
    if fault == "not-finite":  # Python's json writes Infinity and NaN; 1e999 reads as infinity
        name = draw(st.sampled_from(FLOAT_FIELDS["heartbeat"] + ["in_view"] if kind == "heartbeat" else ["in_view"]))
        text = json.dumps({**data, name: 0.5}).replace(
            ": 0.5", ": " + draw(st.sampled_from(["Infinity", "-Infinity", "NaN", "1e999"]))
        )
        return topic, text.encode()
    if fault == "no-version":
        del data["v"]
        return topic, encode(data)
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
    elif fault == "oversize":  # over the contract's limit, under the broker's packet limit (tested on its own)
        data["model" if kind == "count" else "camera"] = "x" * (c.MAX_PAYLOAD_BYTES + draw(st.integers(0, 300)))
    elif fault == "totals-below-window" and kind == "count":
        data["in"], data["total_in"] = 50, 10
    else:  # a heartbeat has no window: make its camera state one that does not exist
        data["camera"] = "sleeping"
    return topic, encode(data)


class DeadLetters:
    def __init__(self, broker: Mosquitto) -> None:
        self.reasons: list[str] = []
        self._lock = threading.Lock()
        self.client = connected(broker, "tech-team", "fuzz", on_message=self._on_message,
                                subscribe=[c.subscription("deadletter", site=SITE.site.id)])  # fmt: skip

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        letter = c.decode("deadletter", message.payload)
        assert isinstance(letter, c.DeadLetter)
        with self._lock:
            self.reasons.append(letter.reason)

    def count(self) -> int:
        with self._lock:
            return len(self.reasons)


SENT = {"messages": 0, "malformed": 0, "refused": 0, "rejected": 0}
CLOCK = {"end": datetime.now(timezone.utc) - timedelta(minutes=1)}
WINDOW = timedelta(seconds=0.2)
Running = tuple[AggregatorProcess, DeadLetters, str, simulated.Publisher]


@pytest.fixture(scope="module")
def running(mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    database = f"fuzz{uuid.uuid4().hex[:8]}"
    aggregator = AggregatorProcess(tmp_path_factory.mktemp("fuzz"), mosquitto, influxdb, database,
                                   instance="agg-fuzz", share_group="g-fuzz")  # fmt: skip
    letters = DeadLetters(mosquitto)
    aggregator.start().wait_connected()
    publisher = simulated.Publisher(mosquitto.login)
    # Every line heard once before the fuzz: a jump needs a last window to jump from.
    SENT["messages"] += publisher.send(simulated.stream(FLEET, 1, start=CLOCK["end"], window_s=WINDOW.total_seconds()))
    CLOCK["end"] += WINDOW
    yield aggregator, letters, database, publisher
    publisher.close()
    close(letters.client)
    assert aggregator.stop() == 0
    aggregator.cleanup()


def sender(topic: str) -> str:
    """The device named in the topic sends it; a topic of no device of the site, some other device."""
    user = simulated.sender_of(topic)
    return user if user in DEVICES else DEVICES[0]


# No shrinking: each example runs against real servers, and a failing one is reported as generated.
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          phases=[Phase.explicit, Phase.generate])  # fmt: skip
@given(bad=st.lists(malformed(), min_size=250, max_size=250), seed=st.integers(0, 2**16))
def test_malformed_messages_are_rejected_one_by_one_and_the_valid_stream_is_stored_whole(
    running: Running, mosquitto: Mosquitto, influxdb: InfluxDB, bad: list[tuple[str, bytes]], seed: int,
) -> None:  # fmt: skip
    aggregator, letters, database, publisher = running
    # The valid stream's clock runs on from one example to the next, as a device's does, and never ahead
    # of the real one: the jumps drawn for the next example end later than it (0.2 s windows).
    start = max(CLOCK["end"], datetime.now(timezone.utc) - timedelta(minutes=1))
    time.sleep(max(0.0, (start + 3 * WINDOW - datetime.now(timezone.utc)).total_seconds()))
    good = list(simulated.stream(FLEET, 3, start=start, window_s=WINDOW.total_seconds()))
    CLOCK["end"] = start + 3 * WINDOW
    mixed = good + bad
    random.Random(seed).shuffle(mixed)  # malformed and valid messages interleaved
    refused: list[tuple[str, str]] = []
    taken = publisher.send(mixed, refused=refused, sender=sender)
    assert all("Not authorized" in why for _topic, why in refused)  # the ACL: another device's topics
    assert all(f"/devices/{sender(topic)}/" not in topic for topic, _why in refused)
    assert taken + len(refused) == len(mixed)
    SENT["messages"] += taken
    SENT["malformed"] += len(bad)
    SENT["refused"] += len(refused)
    SENT["rejected"] += len(bad) - len(refused)
    assert wait_until(lambda: status_of(mosquitto, "agg-fuzz").stored == SENT["messages"], 60), aggregator.log()[-2000:]
    status = status_of(mosquitto, "agg-fuzz")
    assert status.rejected == SENT["rejected"]  # each one the broker let through, no more, no less
    assert wait_until(lambda: letters.count() == SENT["rejected"], 30)
    assert all(reason.strip() for reason in letters.reasons)
    assert wait_until(lambda: all_stored(influxdb, database, FLEET), 30), (
        stored_totals(influxdb, database),
        expected_totals(FLEET),
    )
    assert aggregator.process is not None
    assert aggregator.process.poll() is None  # still up


def test_the_fuzzer_covered_ten_thousand(running: Running) -> None:
    """Runs after the fuzz test in this module: it threw ten thousand, and the log has one line per rejection."""
    aggregator, letters, _database, _publisher = running
    assert SENT["malformed"] >= 10_000
    assert SENT["refused"] > 0
    assert SENT["rejected"] > 9000
    assert aggregator.log().count(" rejected ") == SENT["rejected"]
    assert letters.count() == SENT["rejected"]
    assert "Traceback" not in aggregator.log()
