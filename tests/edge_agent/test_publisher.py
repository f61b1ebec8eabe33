"""The device's MQTT sender against a real Mosquitto: in order, nothing lost when the broker goes away."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher, Sending
from harness.servers import Mosquitto
from lanewatch.mqttconfig import BrokerConfig
from tests.conftest import connected, wait_until

SITE, DEVICE = "sanfang-qixiang", "cam-yijin-west"
TOPIC = f"lanewatch/v1/{SITE}/devices/{DEVICE}/counts/gate"


class Receiver:
    """The control room's subscriber, with a session the broker keeps while it reconnects."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[dict] = []
        self.availability: list[str] = []
        self._lock = threading.Lock()
        self.client = connected(broker, "control-room", f"rx-{uuid.uuid4().hex[:6]}", on_message=self._on_message,
                                subscribe=[TOPIC, f"lanewatch/v1/{SITE}/devices/+/availability"],
                                session_expiry_s=3600)  # fmt: skip
        self.client.reconnect_delay_set(1, 2)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/availability"):
                self.availability.append(json.loads(msg.payload)["state"])
            else:
                self.messages.append(json.loads(msg.payload))

    def seqs(self) -> list[int]:
        with self._lock:
            return [m["seq"] for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def receiver(fresh_mosquitto: Mosquitto) -> Iterator[Receiver]:
    rx = Receiver(fresh_mosquitto)
    yield rx
    rx.close()


def _interleaved_runs(seqs: list[int]) -> int:
    """How many increasing sequences, merged, make up ``seqs`` (patience sorting)."""
    tops: list[int] = []
    for seq in seqs:
        pile = next((i for i, top in enumerate(tops) if top < seq), None)
        if pile is None:
            tops.append(seq)
        else:
            tops[pile] = seq
    return len(tops)


def _append(box: Outbox, publisher: Publisher, seqs: range) -> None:
    for seq in seqs:
        box.append([(TOPIC, json.dumps({"seq": seq}).encode())])
        publisher.notify()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_outbox_reaches_the_broker_in_order_and_empties(
    fresh_mosquitto: Mosquitto, receiver: Receiver, tmp_path: Path, protocol: str
) -> None:
    box = Outbox(tmp_path / "outbox.db")
    login = fresh_mosquitto.login(DEVICE).model_copy(update={"protocol": protocol})
    publisher = Publisher(box, login, SITE, DEVICE, uuid.uuid4().hex)
    publisher.start()
    try:
        _append(box, publisher, range(200))
        assert wait_until(lambda: len(receiver.seqs()) >= 200)
        assert wait_until(lambda: box.depth() == 0)
    finally:
        publisher.stop()
    seqs = receiver.seqs()
    assert sorted(seqs) == list(range(200))  # each once
    # what waited at connect time (backlog) and what came after (live) interleave, each in order
    assert _interleaved_runs(seqs) <= 2
    assert receiver.availability[:1] == ["online"]
    assert wait_until(lambda: receiver.availability[-1:] == ["offline"])  # said on a clean stop


def test_counts_made_while_the_broker_is_down_all_arrive_once_it_is_back(
    fresh_mosquitto: Mosquitto, receiver: Receiver, tmp_path: Path
) -> None:
    box = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(box, fresh_mosquitto.login(DEVICE), SITE, DEVICE, uuid.uuid4().hex,
                          Sending(min_backoff=1, max_backoff=2))  # fmt: skip
    publisher.start()
    try:
        _append(box, publisher, range(50))
        assert wait_until(lambda: len(receiver.seqs()) >= 50)
        fresh_mosquitto.stop()
        assert wait_until(lambda: not publisher.connected)
        _append(box, publisher, range(50, 250))  # the device keeps counting, offline
        assert box.depth() == 200
        fresh_mosquitto.start()  # same port, same persistence
        _append(box, publisher, range(250, 300))  # and live counts keep coming
        assert wait_until(lambda: len(set(receiver.seqs())) >= 300, seconds=60)
        assert wait_until(lambda: box.depth() == 0)
    finally:
        publisher.stop()
    seqs = receiver.seqs()
    assert sorted(set(seqs)) == list(range(300))  # every window, none lost (duplicates are allowed)
    backlog = [s for s in dict.fromkeys(seqs) if 50 <= s < 250]
    assert backlog == sorted(backlog)  # the backlog in order


def test_a_publish_refused_by_paho_stays_in_the_outbox(tmp_path: Path) -> None:
    """Not connected at all: nothing is removed, everything waits on disk."""
    box = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(box, BrokerConfig(port=9), SITE, DEVICE, uuid.uuid4().hex)
    publisher.start()
    try:
        _append(box, publisher, range(10))
        time.sleep(0.5)
        assert box.depth() == 10
        assert not publisher.connected
    finally:
        publisher.stop()


def test_a_message_the_broker_refuses_stays_in_the_outbox_and_the_log_says_why(
    fresh_mosquitto: Mosquitto, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MQTT 5: a PUBACK with a reason code of 0x80 or more is not a delivery. A window on another device's
    topic (the ACL says no) keeps its place in the outbox, while the device's own windows go through."""
    box = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(box, fresh_mosquitto.login(DEVICE), SITE, DEVICE, uuid.uuid4().hex,
                          Sending(refused_pause_s=0.2))  # fmt: skip
    forbidden = TOPIC.replace(f"/devices/{DEVICE}/", "/devices/cam-wenru-west/")
    publisher.start()
    try:
        box.append([(forbidden, json.dumps({"seq": -1}).encode())])
        _append(box, publisher, range(20))
        assert wait_until(lambda: len(receiver.seqs()) >= 20)
        assert wait_until(lambda: publisher.refused >= 2)  # refused, offered again, refused again
        assert box.depth() == 1
        assert [entry.topic for entry in box.pending()] == [forbidden]
    finally:
        publisher.stop()
    assert sorted(receiver.seqs()) == list(range(20))
    assert any("the broker refused 1 message(s) (Not authorized)" in r.getMessage() for r in caplog.records)
