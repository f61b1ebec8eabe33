"""The generated broker configuration on a real Mosquitto: who may do what, and who may not connect."""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from lanewatch.brokerconfig import BrokerFiles, acl_rules, generate
from lanewatch.pki import CertificateAuthority
from lanewatch.services import Mosquitto, ServiceError, free_port
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE, unavailable, wait_until

SITE = load_site(EXAMPLE_SITE)
ROOT = "lanewatch/v1/sanfang-qixiang"
NOT_AUTHORIZED = 135  # MQTT v5 reason code


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, BrokerFiles]]:
    folder = tmp_path_factory.mktemp("broker-config")
    try:
        files = generate(SITE, folder, port=free_port(), host="127.0.0.1")
        broker = Mosquitto(tmp_path_factory.mktemp("secure-mosquitto"), secure=files.config).start()
    except ServiceError as exc:
        unavailable(str(exc))
    yield broker, files
    broker.stop()


def connect(broker: Mosquitto, files: BrokerFiles, user: str, password: str | None = None,
            cert: tuple[Path, Path] | None = None) -> tuple[mqtt.Client, object]:  # fmt: skip
    """A client of ``user``; returns it and its CONNACK reason code once known."""
    ca, user_cert, user_key = files.tls(user)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:4]}",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.username_pw_set(user, password if password is not None else files.secret(user))
    client.tls_set(ca_certs=str(ca), certfile=str((cert or (user_cert, user_key))[0]),
                   keyfile=str((cert or (user_cert, user_key))[1]))  # fmt: skip
    result: dict[str, object] = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: result.setdefault("reason", reason)
    client.on_disconnect = lambda *_: result.setdefault("reason", None)  # dropped before any CONNACK
    client.reconnect_delay_set(60, 60)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert wait_until(lambda: "reason" in result, seconds=10)
    return client, result["reason"]


def test_a_device_publishes_under_its_own_topics_and_nowhere_else(secured: tuple[Mosquitto, BrokerFiles]) -> None:
    broker, files = secured
    aggregator, reason = connect(broker, files, "aggregator")
    assert not reason.is_failure  # type: ignore[attr-defined]
    received: list[str] = []
    subscribed = threading.Event()
    aggregator.on_message = lambda _c, _u, msg: received.append(msg.topic)
    aggregator.on_subscribe = lambda *_: subscribed.set()
    aggregator.subscribe(f"{ROOT}/devices/#", qos=1)
    assert subscribed.wait(10)

    device, reason = connect(broker, files, "cam-yijin-west")
    assert not reason.is_failure  # type: ignore[attr-defined]
    acks: dict[int, int] = {}
    device.on_publish = lambda _c, _u, mid, reason, _p: acks.setdefault(mid, reason.value)
    own = device.publish(f"{ROOT}/devices/cam-yijin-west/heartbeat", b"{}", qos=1)
    forged = device.publish(f"{ROOT}/devices/cam-wenru-west/heartbeat", b"{}", qos=1)
    assert wait_until(lambda: own.mid in acks and forged.mid in acks)
    assert acks[forged.mid] == NOT_AUTHORIZED  # the broker says no, and delivers nothing
    assert wait_until(lambda: f"{ROOT}/devices/cam-yijin-west/heartbeat" in received)
    assert f"{ROOT}/devices/cam-wenru-west/heartbeat" not in received
    for client in (aggregator, device):
        client.disconnect()
        client.loop_stop()


def test_a_device_reads_its_own_entrance_notices_only(secured: tuple[Mosquitto, BrokerFiles]) -> None:
    broker, files = secured
    device, _ = connect(broker, files, "cam-yijin-west")
    received: list[str] = []
    subscribed = threading.Event()
    device.on_message = lambda _c, _u, msg: received.append(msg.topic)
    device.on_subscribe = lambda *_: subscribed.set()
    device.subscribe([(f"{ROOT}/entrances/yijin-west/notices", 1), (f"{ROOT}/entrances/wenru-west/notices", 1)])
    assert subscribed.wait(10)
    aggregator, _ = connect(broker, files, "aggregator")
    aggregator.publish(f"{ROOT}/entrances/wenru-west/notices", b"{}", qos=1).wait_for_publish(10)
    aggregator.publish(f"{ROOT}/entrances/yijin-west/notices", b"{}", qos=1).wait_for_publish(10)
    assert wait_until(lambda: f"{ROOT}/entrances/yijin-west/notices" in received)
    assert received == [f"{ROOT}/entrances/yijin-west/notices"]  # the other entrance's was withheld
    for client in (aggregator, device):
        client.disconnect()
        client.loop_stop()


def test_a_wrong_password_is_refused(secured: tuple[Mosquitto, BrokerFiles]) -> None:
    broker, files = secured
    client, reason = connect(broker, files, "cam-yijin-west", password="not-the-password")
    assert reason.is_failure  # type: ignore[attr-defined]
    client.loop_stop()


def test_a_certificate_from_another_authority_is_refused(
    secured: tuple[Mosquitto, BrokerFiles], tmp_path: Path
) -> None:
    broker, files = secured
    stranger = CertificateAuthority(tmp_path / "other-ca").issue("cam-yijin-west", tmp_path / "other")
    try:
        client, reason = connect(broker, files, "cam-yijin-west", cert=(stranger.cert, stranger.key))
        client.loop_stop()
    except (ssl.SSLError, OSError):  # refused during the handshake itself
        reason = None
    assert reason is None or reason.is_failure  # type: ignore[attr-defined]
    assert wait_until(lambda: "certificate verify failed" in broker.log_tail(50), seconds=2), broker.log_tail(20)


def test_grid_staff_read_only_their_grids() -> None:
    rules = acl_rules(SITE)
    assert rules["staff-yijin-head"] == [f"topic read {ROOT}/zones/yijin/#"]
    assert rules["officer-lin"] == [f"topic read {ROOT}/zones/{z}/#" for z in ("guanglu", "wenru", "west", "yijin")]
    assert rules["control-room"] == [f"topic read {ROOT}/#"]
    readers = [line for user, lines in rules.items() if user.startswith(("staff", "officer")) for line in lines]
    assert all(line.startswith("topic read ") for line in readers)


def test_secrets_are_private_and_kept_when_regenerated(secured: tuple[Mosquitto, BrokerFiles]) -> None:
    _, files = secured
    secret = files.folder / "secrets" / "cam-yijin-west.password"
    assert secret.stat().st_mode & 0o077 == 0
    assert (files.folder / "tls" / "clients" / "cam-yijin-west.key").stat().st_mode & 0o077 == 0
    before = secret.read_text()
    generate(SITE, files.folder, port=files.port, host="127.0.0.1")
    assert secret.read_text() == before
