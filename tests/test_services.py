"""The local servers the tests and the demo rely on: real, private, and without silent loss."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
import pytest

from lanewatch.services import InfluxDB, Mosquitto, ServiceError


def test_influxdb_stores_and_answers_influxql(influxdb: InfluxDB) -> None:
    influxdb.query('CREATE DATABASE "harness"')
    influxdb.write(
        "harness", "flow,entrance=yijin-west in=12i,out=3i 1764385200\nflow,entrance=yijin-west in=4i,out=9i 1764385260"
    )
    body = influxdb.query('SELECT sum("in"), sum("out") FROM flow WHERE entrance = \'yijin-west\'', db="harness")
    assert body["results"][0]["series"][0]["values"][0][1:] == [16, 12]


def test_influxdb_keeps_its_data_through_a_kill_and_restart(fresh_influxdb: InfluxDB) -> None:
    fresh_influxdb.query('CREATE DATABASE "crash"')
    fresh_influxdb.write("crash", "flow,entrance=ta-east in=7i 1764385200")
    first_pid = fresh_influxdb.pid
    fresh_influxdb.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)  # the process is really gone
    fresh_influxdb.start()
    body = fresh_influxdb.query('SELECT "in" FROM flow', db="crash")
    assert body["results"][0]["series"][0]["values"][0][1] == 7


def test_influxql_errors_are_raised_with_the_query(influxdb: InfluxDB) -> None:
    with pytest.raises(ServiceError, match="SELEKT"):
        influxdb.query("SELEKT nothing", db="harness")


def test_broker_queues_more_than_the_default_1000_for_an_offline_subscriber(
    mosquitto: Mosquitto, mqtt_client: Callable[..., mqtt.Client]
) -> None:
    """Mosquitto's default max_queued_messages (1000) drops QoS 1 messages while the publisher still
    gets its PUBACK. Our broker config bounds the queue on purpose instead; count what arrives."""
    total = 3000
    received: set = set()
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.add(int(msg.payload))
        if len(received) == total:
            done.set()

    subscriber = _persistent_session(mosquitto, "queue-check", on_message)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.subscribe("harness/queue", qos=1)
    assert subscribed.wait(10)
    subscriber.disconnect()
    subscriber.loop_stop()

    publisher = mqtt_client()
    infos = [publisher.publish("harness/queue", str(i).encode(), qos=1) for i in range(total)]
    assert all(info.rc == mqtt.MQTT_ERR_SUCCESS for info in infos)
    for info in infos:
        info.wait_for_publish(timeout=30)

    back = _persistent_session(mosquitto, "queue-check", on_message)
    try:
        done.wait(30)
    finally:
        back.disconnect()
        back.loop_stop()
    assert len(received) == total


def _persistent_session(broker: Mosquitto, client_id: str, on_message: Callable[..., None]) -> mqtt.Client:
    """An MQTT v5 client whose session (subscriptions, queued messages) outlives a disconnect."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, clean_start=False, properties=props)
    client.loop_start()
    return client


def test_a_missing_server_binary_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lanewatch.services.SEARCH_DIRS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match=r"apt-get install influxdb"):
        InfluxDB(tmp_path / "db").start()
