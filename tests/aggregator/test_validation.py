"""What the aggregator rejects, and the one-line reason it gives for each (it goes to the log and the dead letter)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aggregator.config import ValidationConfig
from aggregator.validation import InvalidMessageError, Validator
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE
from tests.samples import samples

SITE = load_site(EXAMPLE_SITE)
NOW = datetime.now(timezone.utc).replace(microsecond=0)
ROOT = "lanewatch/v1/sanfang-qixiang/devices"


def window(**changes: Any) -> c.CountWindow:
    base = samples()["count"]
    fields = {"window_start": NOW - timedelta(seconds=5), "window_end": NOW, **changes}
    return base.model_copy(update=fields)


def payload(message: c.Message, **json_changes: Any) -> bytes:
    data = json.loads(c.encode(message))
    for key, value in json_changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


def check(topic: str, body: bytes) -> c.Message:
    return Validator(SITE, ValidationConfig()).check(topic, body, NOW).message


def test_a_valid_window_heartbeat_and_availability_pass_with_their_entrance() -> None:
    validator = Validator(SITE, ValidationConfig())
    count = window()
    accepted = validator.check(c.topic_for(count), c.encode(count), NOW)
    assert accepted.entrance.id == "yijin-west"
    assert accepted.message == count
    beat = samples()["heartbeat"].model_copy(update={"time": NOW})
    assert validator.check(c.topic_for(beat), c.encode(beat), NOW).message == beat
    online = samples()["availability"]
    assert validator.check(c.topic_for(online), c.encode(online), NOW).kind == "availability"


COUNT_TOPIC = f"{ROOT}/cam-yijin-west/counts/gate"


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        (COUNT_TOPIC, b"{not json", "invalid count: payload: Invalid JSON"),
        (COUNT_TOPIC, b"\xff\xfe\x00binary", "invalid count: payload: Invalid JSON"),
        (COUNT_TOPIC, payload(window(), **{"in": "12"}), "invalid count: in: Input should be a valid integer"),
        (COUNT_TOPIC, payload(window(), total_out=None), "invalid count: total_out: Field required"),
        (COUNT_TOPIC, payload(window(), image="aGVsbG8="), "invalid count: image: Extra inputs are not permitted"),
        (COUNT_TOPIC, payload(window(), out=-1), "invalid count: out: Input should be greater than or equal to 0"),
        (COUNT_TOPIC, payload(window(), seq=2**60), "invalid count: seq: Input should be less than or equal to"),
        (
            f"{ROOT}/cam-nowhere/counts/gate",
            payload(window(device="cam-nowhere")),
            "unknown device 'cam-nowhere': not in the site inventory",
        ),
        (
            f"{ROOT}/cam-wenru-west/counts/gate",
            payload(window()),
            "device 'cam-yijin-west' in the payload differs from the topic's 'cam-wenru-west'",
        ),
        (
            f"{ROOT}/cam-yijin-west/counts/exit",
            payload(window()),
            "line 'gate' in the payload differs from the topic's 'exit'",
        ),
        (
            f"{ROOT}/cam-yijin-west/counts/exit",
            payload(window(line="exit")),
            "line 'exit' is not a counting line of cam-yijin-west in the inventory (gate)",
        ),
        (
            COUNT_TOPIC,
            payload(window(window_start=NOW + timedelta(hours=1), window_end=NOW + timedelta(hours=1, seconds=5))),
            "s ahead of the aggregator's clock (limit 300 s); check the device's NTP",
        ),
        (
            COUNT_TOPIC,
            payload(window(window_start=NOW - timedelta(days=9, seconds=5), window_end=NOW - timedelta(days=9))),
            "is older than 192 h; too late to count (validation.max_age_h)",
        ),
        (
            COUNT_TOPIC,
            payload(window(in_=400, out=0, total_in=48_600)),
            "400 crossings in 5 s is more than 22.5 people/s can pass a 4.5 m wide entrance; check the counter",
        ),
        (COUNT_TOPIC, b"{" + b" " * c.MAX_PAYLOAD_BYTES + b"}", f"bytes; the limit is {c.MAX_PAYLOAD_BYTES}"),
        (
            "lanewatch/v1/other-site/devices/cam-yijin-west/counts/gate",
            payload(window()),
            "site 'other-site' in the topic is not this aggregator's site 'sanfang-qixiang'",
        ),
        (
            COUNT_TOPIC,
            payload(window(), site="other-site"),
            "site 'other-site' in the payload differs from the topic's 'sanfang-qixiang'",
        ),
        (f"{ROOT}/cam-yijin-west/firmware", b"{}", "is not a LaneWatch lanewatch/v1 topic"),
        (
            f"{ROOT}/cam-yijin-west/heartbeat",
            payload(samples()["heartbeat"].model_copy(update={"time": NOW}), fps=None),
            "invalid heartbeat: fps: Field required",
        ),
        (
            f"{ROOT}/cam-yijin-west/availability",
            payload(samples()["availability"], state="asleep"),
            "invalid availability: state: Input should be 'online' or 'offline'",
        ),
    ],
    ids=[
        "bad-json", "binary", "string-count", "missing-field", "extra-field", "negative", "absurd-seq",
        "unknown-device", "device-mismatch", "line-mismatch", "unknown-line", "future", "too-old",
        "beyond-physical-flow", "oversized", "other-site-topic", "other-site-payload", "not-our-topic",
        "heartbeat-missing-field", "availability-bad-state",
    ],
)  # fmt: skip
def test_each_broken_message_is_rejected_with_its_reason(topic: str, body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        check(topic, body)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)  # one line in the log


def test_the_flow_limit_follows_the_entrance_width() -> None:
    """Nanhou Street's 11 m gate passes more people per window than a 4.5 m lane mouth."""
    wide = window(device="cam-nanhou-north-a", line="west-half", in_=200, out=0, total_in=48_400)
    assert check(c.topic_for(wide), c.encode(wide)) == wide
    narrow = window(in_=200, out=0, total_in=48_400)
    with pytest.raises(InvalidMessageError):
        check(c.topic_for(narrow), c.encode(narrow))


def test_the_example_configuration_is_valid() -> None:
    from aggregator.config import load_aggregator_config
    from tests.conftest import REPO

    config = load_aggregator_config(REPO / "firmware_config" / "aggregator.yaml")
    assert config.roles == ["store", "rollup"]
    assert config.influxdb.database == "sanfang-qixiang"


def test_a_clock_far_off_is_measured_from_heartbeats_and_its_windows_re_timed() -> None:
    validator = Validator(SITE, ValidationConfig())
    ahead = timedelta(hours=2, seconds=3)
    late = timedelta(seconds=20)  # this heartbeat waited at the broker: the next, prompt one sets the estimate
    for delay in (late, timedelta(0)):
        beat = samples()["heartbeat"].model_copy(update={"time": NOW + ahead})
        stored = validator.check(c.topic_for(beat), c.encode(beat), NOW + delay, live=True).message
    assert stored.time == NOW + timedelta(seconds=3)  # type: ignore[attr-defined]  # re-timed by 2 h (10-s steps)
    count = window(window_start=NOW + ahead - timedelta(seconds=5), window_end=NOW + ahead)
    accepted = validator.check(c.topic_for(count), c.encode(count), NOW)  # 2 h in the future: not rejected
    assert accepted.message.window_end == NOW + timedelta(seconds=3)  # type: ignore[attr-defined]
    assert accepted.message.in_ == count.in_  # type: ignore[attr-defined]
    assert validator.clocks.off() == {"cam-yijin-west": timedelta(hours=2)}
    # NTP steps the clock right: the very next heartbeat ends the correction
    beat = samples()["heartbeat"].model_copy(update={"time": NOW})
    validator.check(c.topic_for(beat), c.encode(beat), NOW, live=True)
    assert validator.clocks.off() == {}
    assert validator.check(c.topic_for(window()), c.encode(window()), NOW).message == window()


def test_a_clock_a_little_off_or_a_heartbeat_delayed_is_left_alone() -> None:
    validator = Validator(SITE, ValidationConfig())
    for skew, delay in ((timedelta(seconds=90), timedelta(0)), (timedelta(0), timedelta(seconds=59))):
        beat = samples()["heartbeat"].model_copy(update={"time": NOW + skew})
        assert validator.check(c.topic_for(beat), c.encode(beat), NOW + delay, live=True).message == beat
    assert validator.clocks.off() == {}


def test_a_heartbeat_replayed_from_the_past_says_nothing_about_the_clock() -> None:
    """Only heartbeats sent live (with the contract's expiry) measure a clock; a replay's old ones do not."""
    validator = Validator(SITE, ValidationConfig())
    beat = samples()["heartbeat"].model_copy(update={"time": NOW - timedelta(hours=5)})
    assert validator.check(c.topic_for(beat), c.encode(beat), NOW).message == beat
    assert validator.clocks.off() == {}


def test_the_clock_tolerance_cannot_exceed_the_future_limit() -> None:
    with pytest.raises(ValueError, match="clock_tolerance_s"):
        ValidationConfig(clock_tolerance_s=600, max_future_s=300)
