"""The broker configuration a site gets (`lanewatch site broker-config`), on a real Mosquitto, tried as an
attacker and as an operator would: who may connect as whom, who may do what, and that nothing a client
was told is delivered is lost, whatever the client sends and however long the aggregator is away.

Attackers use raw paho clients with whatever client id, certificate and protocol they like, not the
project's client factory.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
import pytest

from harness import simulated
from harness.servers import InfluxDB, Mosquitto
from harness.sessions import create_session
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site import load_site
from provisioning.brokerconfig import MAX_PACKET_SIZE, acl_rules, build_plugin, generate, queue_budget
from provisioning.pki import CertificateAuthority
from tests.aggregators import AggregatorProcess, all_stored, expected_raw, stored_raw, stored_totals
from tests.conftest import EXAMPLE_SITE, close, connected, run_cli, wait_until

SITE = load_site(EXAMPLE_SITE)
ROOT = "lanewatch/v1/sanfang-qixiang"
NOT_AUTHORIZED = 135  # MQTT v5 reason code


def attempt(
    broker: Mosquitto,
    user: str,
    client_id: str,
    *,
    password: Optional[str] = None,
    cert: Optional[tuple[Path, Path]] = None,
    protocol: int = mqtt.MQTTv5,
    on_message: Optional[Callable[..., None]] = None,
    in_flight: int = 20,
) -> tuple[mqtt.Client, Any, list[Any]]:
    """A raw client logging in as ``user`` with any client id, password or certificate; the client, its
    CONNACK reason (None when dropped before one) and the disconnects it saw."""
    files = broker.files
    ca, user_cert, user_key = files.tls(user)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.username_pw_set(user, password if password is not None else files.secret(user))
    certfile, keyfile = cert or (user_cert, user_key)
    client.tls_set(ca_certs=str(ca), certfile=str(certfile), keyfile=str(keyfile))
    client.max_inflight_messages_set(in_flight)
    if on_message is not None:
        client.on_message = on_message
    result: dict[str, Any] = {}
    disconnects: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: result.setdefault("reason", reason)

    def on_disconnect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        result.setdefault("reason", None)  # dropped before any CONNACK
        disconnects.append(reason)

    client.on_disconnect = on_disconnect
    client.reconnect_delay_set(60, 60)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    assert wait_until(lambda: "reason" in result, seconds=10)
    return client, result["reason"], disconnects


def refused(reason: Any) -> bool:
    return reason is None or reason.is_failure


# --- logins ----------------------------------------------------------------------------------------


def test_a_device_publishes_under_its_own_topics_and_nowhere_else(mosquitto: Mosquitto) -> None:
    received: list[str] = []
    reader = connected(mosquitto, "control-room", "acl", subscribe=[f"{ROOT}/devices/+/heartbeat"],
                       on_message=lambda _c, _u, msg: received.append(msg.topic))  # fmt: skip
    device = connected(mosquitto, "cam-yijin-west", "acl")
    acks: dict[int, int] = {}
    device.on_publish = lambda _c, _u, mid, reason, _p: acks.setdefault(mid, reason.value)
    own = device.publish(f"{ROOT}/devices/cam-yijin-west/heartbeat", b"{}", qos=1)
    forged = device.publish(f"{ROOT}/devices/cam-wenru-west/heartbeat", b"{}", qos=1)
    assert wait_until(lambda: own.mid in acks and forged.mid in acks)
    assert acks[forged.mid] == NOT_AUTHORIZED  # the broker says no, and delivers nothing
    assert wait_until(lambda: f"{ROOT}/devices/cam-yijin-west/heartbeat" in received)
    assert f"{ROOT}/devices/cam-wenru-west/heartbeat" not in received
    close(reader, device)


def test_a_device_reads_its_own_entrance_notices_only(mosquitto: Mosquitto) -> None:
    received: list[str] = []
    entrances = [f"{ROOT}/entrances/yijin-west/notices", f"{ROOT}/entrances/wenru-west/notices"]
    device = connected(mosquitto, "cam-yijin-west", "notices", subscribe=entrances,
                       on_message=lambda _c, _u, msg: received.append(msg.topic))  # fmt: skip
    aggregator = connected(mosquitto, "aggregator", "notices")
    aggregator.publish(f"{ROOT}/entrances/wenru-west/notices", b"{}", qos=1).wait_for_publish(10)
    aggregator.publish(f"{ROOT}/entrances/yijin-west/notices", b"{}", qos=1).wait_for_publish(10)
    assert wait_until(lambda: f"{ROOT}/entrances/yijin-west/notices" in received)
    assert received == [f"{ROOT}/entrances/yijin-west/notices"]  # the other entrance's was withheld
    close(aggregator, device)


def test_a_wrong_password_is_refused(mosquitto: Mosquitto) -> None:
    client, reason, _ = attempt(mosquitto, "cam-yijin-west", "cam-yijin-west", password="not-the-password")
    assert refused(reason)
    client.loop_stop()


def test_a_certificate_from_another_authority_is_refused(mosquitto: Mosquitto, tmp_path: Path) -> None:
    stranger = CertificateAuthority(tmp_path / "other-ca").issue("cam-yijin-west", tmp_path / "other")
    try:
        client, reason, _ = attempt(mosquitto, "cam-yijin-west", "cam-yijin-west", cert=(stranger.cert, stranger.key))
        client.loop_stop()
    except (ssl.SSLError, OSError):  # refused during the handshake itself
        reason = None
    assert refused(reason)
    assert wait_until(lambda: "certificate verify failed" in mosquitto.log_tail(200), seconds=5)


def test_another_devices_certificate_with_a_devices_own_login_is_refused(mosquitto: Mosquitto) -> None:
    """The certificate of cam-wenru-west, presented with cam-yijin-west's username and password."""
    _ca, cert, key = mosquitto.files.tls("cam-wenru-west")
    client, reason, _ = attempt(mosquitto, "cam-yijin-west", "cam-yijin-west", cert=(cert, key))
    client.loop_stop()
    assert refused(reason)
    assert wait_until(lambda: "its client certificate is not issued to cam-yijin-west" in mosquitto.log_tail(200))


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt3.1.1"])
def test_a_device_using_another_devices_client_id_is_refused_and_the_other_stays(
    fresh_mosquitto: Mosquitto, protocol: int
) -> None:
    """Without the binding, the two would kick each other off every second, and the victim's Last Will
    would mark its zones unknown each time."""
    broker = fresh_mosquitto
    wills: list[bytes] = []
    watch = connected(broker, "control-room", "wills", subscribe=[f"{ROOT}/devices/cam-wenru-west/availability"],
                      on_message=lambda _c, _u, m: wills.append(m.payload))  # fmt: skip
    victim = connected(broker, "cam-wenru-west", will=(f"{ROOT}/devices/cam-wenru-west/availability", b"offline", True))
    dropped = threading.Event()
    victim.on_disconnect = lambda *_args: dropped.set()
    thief, reason, _ = attempt(broker, "cam-yijin-west", "cam-wenru-west", protocol=protocol)
    thief.loop_stop()
    assert refused(reason)
    assert not dropped.wait(3)  # the real device keeps its connection
    assert victim.is_connected()
    assert wills == []  # and no Last Will fired
    assert "client id cam-wenru-west is not cam-yijin-west" in broker.log_tail(100)
    close(victim, watch)


def test_a_person_using_the_aggregators_client_id_is_refused_and_its_session_keeps_every_message(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    """A grid officer, logged in with their own password and certificate, tries the aggregator's client id
    while the aggregator is down. Its 7-day session, with every message the devices were acknowledged
    meanwhile, must survive."""
    broker = fresh_mosquitto
    create_session(broker, "aggregator-1", "lanewatch-aggregator", SITE.site.id)
    fleet = simulated.devices(SITE)
    messages = list(simulated.stream(fleet, 25))  # 500 windows, 100 heartbeats
    publisher = simulated.Publisher(broker.login)
    assert publisher.send(messages) == len(messages)
    publisher.close()
    answers = []
    for client_id in ("aggregator:aggregator-1", "aggregator-1"):
        intruder, reason, _ = attempt(broker, "officer-lin", client_id)
        intruder.loop_stop()
        intruder.disconnect()
        answers.append(reason)
    database = f"takeover{uuid.uuid4().hex[:6]}"
    aggregator = AggregatorProcess(tmp_path, broker, influxdb, database)
    try:
        aggregator.start().wait_connected()
        assert wait_until(lambda: all_stored(influxdb, database, fleet), 60), stored_totals(influxdb, database)
    finally:
        aggregator.cleanup()
    assert all(refused(reason) for reason in answers)


def test_client_ids_belong_to_their_login() -> None:
    device = BrokerConfig(username="cam-yijin-west")
    assert device.client_id("cam-yijin-west") == "cam-yijin-west"
    assert device.client_id("selftest") == "cam-yijin-west:selftest"
    assert BrokerConfig(username="aggregator").client_id("aggregator-1") == "aggregator:aggregator-1"
    assert BrokerConfig().client_id("aggregator-1") == "aggregator-1"  # a broker without logins


# --- nothing dropped unseen --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt3.1.1"])
def test_qos_2_is_refused_never_dropped_behind_an_acknowledgement(fresh_mosquitto: Mosquitto, protocol: int) -> None:
    """Beyond its in-flight limit Mosquitto drops QoS 2 messages it has acknowledged (MQTT 3.1.1 cannot even
    say so). The site's broker refuses QoS 2 outright: every message whose delivery the publisher saw
    completed arrived, and a subscription asking for QoS 2 is granted QoS 1."""
    broker = fresh_mosquitto
    topic = f"{ROOT}/devices/cam-yijin-west/heartbeat"
    received: set[bytes] = set()
    reader = connected(broker, "control-room", "qos2", on_message=lambda _c, _u, m: received.add(m.payload))
    granted: list[Any] = []
    subscribed = threading.Event()
    reader.on_subscribe = lambda _c, _u, _m, reasons, _p: (granted.extend(reasons), subscribed.set())
    reader.subscribe(topic, qos=2)
    assert subscribed.wait(10)
    # more unacknowledged than the broker's in-flight limit, as a careless client may have
    device, reason, disconnects = attempt(broker, "cam-yijin-west", "cam-yijin-west", protocol=protocol, in_flight=1000)
    assert not refused(reason)
    completed: set[bytes] = set()
    done = {}
    device.on_publish = lambda _c, _u, mid, _r, _p: completed.add(done[mid]) if mid in done else None
    for i in range(200):  # far beyond the in-flight limit
        payload = str(i).encode()
        done[device.publish(topic, payload, qos=2).mid] = payload
    assert wait_until(lambda: disconnects or len(completed) == 200, 20)
    wait_until(lambda: completed <= received, 5)
    device.loop_stop()
    assert completed <= received  # nothing the publisher was told was delivered is missing
    assert disconnects  # refused: the connection is closed, the messages stay with the publisher
    assert completed == set()
    assert "Too high QoS in PUBLISH from cam-yijin-west" in broker.log_tail(50)
    assert [r.value for r in granted] == [1]  # the subscription asked for QoS 2: downgraded to QoS 1
    close(reader)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt3.1.1"])
def test_an_oversized_payload_is_refused_at_the_broker(fresh_mosquitto: Mosquitto, protocol: int) -> None:
    """Larger than any packet the contract allows: the broker closes the connection before holding it, so
    neither its memory nor any subscriber's sees it, and the publisher is never told it was delivered."""
    broker = fresh_mosquitto
    topic = f"{ROOT}/devices/cam-yijin-west/heartbeat"
    received: list[int] = []
    reader = connected(broker, "control-room", "big", subscribe=[topic],
                       on_message=lambda _c, _u, m: received.append(len(m.payload)))  # fmt: skip
    device, reason, disconnects = attempt(broker, "cam-yijin-west", "cam-yijin-west", protocol=protocol)
    assert not refused(reason)
    acked: list[int] = []
    device.on_publish = lambda _c, _u, mid, _r, _p: acked.append(mid)
    device.publish(topic, b"x" * (4 * 1024 * 1024), qos=1)  # a picture's worth
    assert wait_until(lambda: disconnects, 10)
    device.loop_stop()
    assert acked == []
    small = connected(broker, "cam-yijin-west", "small")
    small.publish(topic, b"{}", qos=1).wait_for_publish(10)  # the device can still send what fits
    assert wait_until(lambda: received == [2])
    close(small, reader)
    assert MAX_PACKET_SIZE < 40 * 1024


def test_the_aggregator_away_for_15_minutes_at_peak_loses_and_doubles_nothing(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    """Every device of the example site publishing a window every 5 s and a heartbeat every 30 s (the
    site's peak rate: devices send a window whatever the traffic) while the aggregator is stopped for
    15 minutes: 4,200 messages, four times Mosquitto's default queue of 1,000, every one acknowledged.
    All are stored once when it is back, and every zone's occupancy is the devices' count."""
    broker = fresh_mosquitto
    create_session(broker, "aggregator-1", "lanewatch-aggregator", SITE.site.id)
    fleet = simulated.devices(SITE)
    minutes = 15
    start = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    backlog = list(simulated.stream(fleet, minutes * 12, start=start, window_s=5.0, heartbeat_every=6))
    assert len(backlog) == 20 * minutes * 12 + 20 * minutes * 2 == 4200
    publisher = simulated.Publisher(broker.login)
    assert publisher.send(backlog) == len(backlog)  # each one acknowledged with success
    publisher.close()
    database = f"outage{uuid.uuid4().hex[:6]}"
    aggregator = AggregatorProcess(tmp_path, broker, influxdb, database)
    try:
        aggregator.start().wait_connected()
        assert wait_until(lambda: all_stored(influxdb, database, fleet), 120), (
            stored_totals(influxdb, database), aggregator.log()[-2000:],
        )  # fmt: skip
        assert wait_until(lambda: stored_raw(influxdb, database) == expected_raw(SITE, fleet), 30)
    finally:
        aggregator.cleanup()
    assert "being dropped" not in broker.log_tail(2000)


# --- the generated files -------------------------------------------------------------------------------


def test_grid_staff_read_only_their_grids_write_only_their_own_headcounts_and_technicians_see_dead_letters() -> None:
    rules = acl_rules(SITE)
    assert rules["staff-yijin-head"] == [
        f"topic read {ROOT}/zones/yijin/#", f"topic write {ROOT}/headcounts/yijin/staff-yijin-head"
    ]  # fmt: skip
    lanes = ("guanglu", "wenru", "yijin")  # the third-level grids of West
    assert rules["officer-lin"] == [f"topic read {ROOT}/zones/{z}/#" for z in ("guanglu", "wenru", "west", "yijin")] + [
        f"topic write {ROOT}/headcounts/{z}/officer-lin" for z in lanes
    ]
    assert rules["control-room"] == [f"topic read {ROOT}/#"]
    assert f"topic read {ROOT}/aggregator/+/deadletter" in rules["tech-team"]
    assert f"topic read {ROOT}/headcounts/#" in rules["aggregator"]
    for user, lines in rules.items():
        if user.startswith(("staff", "officer")):
            writes = [line for line in lines if not line.startswith("topic read ")]
            assert all(
                line.startswith(f"topic write {ROOT}/headcounts/") and line.endswith(f"/{user}") for line in writes
            )


def test_secrets_are_private_and_kept_when_regenerated(mosquitto: Mosquitto) -> None:
    files = mosquitto.files
    secret = files.folder / "secrets" / "cam-yijin-west.password"
    assert secret.stat().st_mode & 0o077 == 0
    assert (files.folder / "tls" / "clients" / "cam-yijin-west.key").stat().st_mode & 0o077 == 0
    assert not list(files.folder.glob(".passwords*"))  # no plain-text password file left behind
    assert "cam-yijin-west:" + files.secret("cam-yijin-west") not in files.passwords.read_text()
    before = secret.read_text()
    generate(SITE, files.folder, port=files.port, host="127.0.0.1")
    assert secret.read_text() == before


def test_the_queue_is_sized_for_the_outage_and_says_what_it_costs(tmp_path: Path) -> None:
    budget = queue_budget(SITE, 24)
    assert budget.messages_per_hour == 20 * 720 + 20 * 120  # a window every 5 s, a heartbeat every 30 s
    assert budget.messages == 24 * budget.messages_per_hour
    result = run_cli("site", "broker-config", str(EXAMPLE_SITE), str(tmp_path / "broker"), "--outage-hours", "72")
    assert result.exit_code == 0, result.stderr
    config = (tmp_path / "broker" / "lanewatch.conf").read_text()
    assert f"max_queued_messages {queue_budget(SITE, 72).messages}\n" in config
    for line in ("max_qos 1", f"max_packet_size {MAX_PACKET_SIZE}", "persistence true", "require_certificate true",
                 "set_tcp_nodelay true", "allow_anonymous false",
                 f"plugin {tmp_path / 'broker' / 'lanewatch_identity.so'}"):  # fmt: skip
        assert line + "\n" in config
    assert f"{queue_budget(SITE, 72).messages:,} messages (72 h" in result.stdout
    assert f"about {queue_budget(SITE, 72).memory_mb:,} MB" in result.stdout


def test_a_broker_host_without_the_tools_is_told_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = tmp_path / "built"
    build_plugin(built)  # as on a host that built it before
    monkeypatch.setattr("provisioning.binaries.SEARCH_DIRS", ())
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    for folder, hint in (
        (tmp_path / "new", "sudo apt-get install gcc mosquitto-dev libssl-dev"),
        (built, "mosquitto_passwd is not installed: run `sudo apt-get install mosquitto`"),
    ):
        result = run_cli("site", "broker-config", str(EXAMPLE_SITE), str(folder))
        assert result.exit_code == 1
        assert hint in result.stderr
        assert "Traceback" not in result.stderr
        assert not (folder / ".passwords.new").exists()  # no password left in plain text
