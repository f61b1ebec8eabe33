"""Every message kind through the real Mosquitto, checked on arrival against the committed JSON Schema."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from harness.servers import Mosquitto
from lanewatch import contract as c
from tests.conftest import close, connected
from tests.core.test_contract import schema_for
from tests.samples import SITE, samples

Received = tuple[str, bytes, bool]


def _collector(client: mqtt.Client, filters: list[str]) -> queue.Queue[Received]:
    inbox: queue.Queue[Received] = queue.Queue()
    subscribed = queue.Queue()
    client.on_message = lambda _c, _u, msg: inbox.put((msg.topic, msg.payload, bool(msg.retain)))
    client.on_subscribe = lambda *_args: subscribed.put(True)
    client.subscribe([(f, mqtt.SubscribeOptions(qos=c.QOS)) for f in filters])
    subscribed.get(timeout=10)
    return inbox


def _published(kind: str) -> tuple[str, c.Message, bool]:
    message = samples()[kind]
    entrance = "nanhou-north" if kind == "entrance_notice" else None
    return c.topic_for(message, entrance=entrance), message, c.KINDS[kind].retained


def _sender(broker: Mosquitto, kind: str) -> mqtt.Client:
    """Who may publish this kind: the device named in it, the person who counted, the forwarder (whom the
    notices reach), or the aggregator."""
    message = samples()[kind]
    device = message.device if kind in ("count", "heartbeat", "availability") else None  # type: ignore[attr-defined]
    person = message.person if isinstance(message, c.Headcount) else None
    forwarder = "forwarder" if isinstance(message, (c.ReachState, c.ForwarderStatus)) else None
    return connected(broker, device or person or forwarder or "aggregator", f"contract-{kind}")


@pytest.fixture(autouse=True)
def forget_retained(mosquitto: Mosquitto) -> Iterator[None]:
    """The samples' retained messages are removed afterwards: on the session's broker, later tests'
    aggregators would otherwise take the sample device's availability as their own data."""
    yield
    for kind, (_model, _template, retained) in c.KINDS.items():
        if retained:
            topic, _message, _retained = _published(kind)
            sender = _sender(mosquitto, kind)
            sender.publish(topic, b"", qos=c.QOS, retain=True).wait_for_publish(timeout=10)
            close(sender)


def test_every_kind_crosses_the_broker_intact(mosquitto: Mosquitto) -> None:
    receiver = connected(mosquitto, "control-room", "contract")
    inbox = _collector(receiver, [c.subscription(kind, site=SITE) for kind in c.KINDS])
    sent: dict[str, tuple[str, c.Message]] = {}
    for kind in c.KINDS:
        topic, message, retained = _published(kind)
        sender = _sender(mosquitto, kind)
        info = sender.publish(topic, c.encode(message), qos=c.QOS, retain=retained)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        info.wait_for_publish(timeout=10)
        close(sender)
        sent[topic] = (kind, message)

    arrived = {}
    while not set(sent) <= set(arrived):  # other tests' retained statuses may arrive too
        topic, payload, _ = inbox.get(timeout=10)
        arrived[topic] = payload
    for topic, (kind, message) in sent.items():
        parsed = c.parse_topic(topic)
        assert parsed.kind == kind
        jsonschema.validate(json.loads(arrived[topic]), schema_for(kind))
        assert c.decode(parsed.kind, arrived[topic]) == message
    close(receiver)


def test_retained_state_reaches_a_receiver_that_connects_later(mosquitto: Mosquitto) -> None:
    """A staff phone or a sign that starts after the level changed still gets the current level at once."""
    topics = []
    for kind in ("availability", "level"):
        topic, message, retained = _published(kind)
        assert retained
        sender = _sender(mosquitto, kind)
        sender.publish(topic, c.encode(message), qos=c.QOS, retain=True).wait_for_publish(timeout=10)
        close(sender)
        topics.append(topic)

    late = connected(mosquitto, "control-room", "late")
    inbox = _collector(late, topics)  # these topics only: other tests' aggregators retain levels too
    got = {}
    while len(got) < 2:
        topic, payload, retain = inbox.get(timeout=10)
        assert retain, f"{topic} should arrive as retained state"
        got[c.parse_topic(topic).kind] = c.decode(c.parse_topic(topic).kind, payload)
    assert got["level"] == samples()["level"]
    assert got["availability"] == samples()["availability"]
    close(late)
