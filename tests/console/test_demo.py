"""The whole site on one machine (`lanewatch demo`): footage to a report, real traffic whole, Ctrl-C stops all.

Everything is real: the generated broker configuration (TLS, a login and ACL per device and person)
on Mosquitto, InfluxDB, the aggregator, edge agents as processes of their own running the TFLite
pipeline on the shared footage, signs on pseudo-terminals, the traffic devices' own MQTT clients.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from datetime import time as dtime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from aggregator.config import AggregatorConfig
from aggregator.influx import Database, rows
from console.demo.runner import Footage, SiteRunner
from console.demo.view import SiteState, listen
from control_room import reports
from harness.servers import InfluxDB, Mosquitto, ServiceError
from lanewatch import contract
from lanewatch.site import Site, load_site
from tests.conftest import EXAMPLE_SITE, child_pids, unavailable, wait_until

pytestmark = pytest.mark.services  # the demo starts its own servers

#: One lane behind one gate, small enough for the footage alone to fill it: four people walk in
#: through TUD-Campus on every pass of the clip, and the lane holds three.
SMALL_SITE = """\
site: {id: old-lane, name: {zh: 老巷, en: Old Lane}, timezone: Asia/Shanghai}
people:
  - {id: officer-a, name: 警官甲, role: officer}
  - {id: staff-a, name: 巷长, role: staff}
  - {id: control-room, name: 指挥室, role: control_room}
  - {id: tech-team, name: 维护组, role: technician}
zones:
  - {id: town, name: {zh: 老城, en: Old Town}, kind: area, capacity: 3}
  - {id: quarter, name: {zh: 片区, en: Quarter}, kind: grid2, parent: town, capacity: 3, officer: officer-a}
  - {id: lane, name: {zh: 老巷, en: The Lane}, kind: grid3, parent: quarter, capacity: 3, officer: officer-a,
     staff: [staff-a]}
entrances:
  - {id: gate, name: {zh: 巷口, en: Lane gate}, zone: lane, width_m: 3.0}
devices:
  - {id: cam-gate, entrance: gate, hardware: Raspberry Pi 5, lines: [{name: gate, start: [0.5, 0.0], end: [0.5, 1.0]}]}
signs:
  - {id: sign-gate, entrance: gate, device: cam-gate}
"""


def start(runner: SiteRunner) -> SiteRunner:
    try:
        runner.start()
    except ServiceError as exc:
        runner.stop()
        unavailable(str(exc))
    return runner


class Inbox:
    """A receiver logged in as ``user``, collecting the zone notices it is allowed to read."""

    def __init__(self, runner: SiteRunner, user: str, zone: str) -> None:
        self.notices: list[contract.DiversionNotice] = []
        self.subscribed = threading.Event()
        broker = runner.broker_for(user)
        self.client = broker.client("inbox")
        topic = contract.KINDS["zone_notice"].template.format(site=runner.site.site.id, zone=zone)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.notices.append(contract.decode("zone_notice", m.payload))
        broker.connect(self.client, wait=True)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def small_site(tmp_path: Path) -> Site:
    path = tmp_path / "old-lane.yaml"
    path.write_text(SMALL_SITE)
    return load_site(path)


def test_footage_becomes_counts_a_red_lane_a_notice_and_a_sign_and_a_report(
    small_site: Site, shared_assets: Path, tmp_path: Path
) -> None:
    clip = shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4"
    model = shared_assets / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"
    runner = SiteRunner(small_site, tmp_path / "demo", [Footage("cam-gate", clip, (0.5, 0.0, 0.5, 1.0))],
                        model=model, traffic=False)  # fmt: skip
    start(runner)
    inbox: Inbox | None = None
    try:
        # the demo's broker is the one a site gets: no way in without TLS, a certificate and a login
        assert runner.broker is not None
        anonymous = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        anonymous.connect_async(runner.broker.host, runner.broker.port)
        anonymous.loop_start()
        assert not wait_until(anonymous.is_connected, seconds=3)
        anonymous.loop_stop()
        inbox = Inbox(runner, "officer-a", "lane")
        assert inbox.subscribed.wait(30)
        state = SiteState(small_site)
        watcher = listen(state, runner.broker_for("control-room"))
        agent = runner.agents[0]
        assert agent.sign is not None

        # the lane fills from the footage alone: red, to the officer and on the gate's sign
        assert wait_until(lambda: any(n.level == "red" for n in inbox.notices), seconds=120), runner.agents[0]
        red = next(n for n in inbox.notices if n.level == "red")
        assert red.zone == "lane"
        assert red.occupancy is not None
        assert red.occupancy >= 3
        assert "officer-a" in red.to
        assert "sign-gate" in red.to
        assert wait_until(lambda: agent.sign.displayed is not None and agent.sign.displayed[0] == "R", seconds=30)
        assert wait_until(lambda: state.levels.get("lane") and state.levels["lane"].level == "red")
        watcher.disconnect()
        watcher.loop_stop()

        # the agent stops (sending what its outbox holds): every count it sent is in InfluxDB, once
        runner.stop_devices()
        totals = state.devices["cam-gate"].totals["gate"]
        assert totals[0] >= 4  # at least one whole pass of the clip: its four walkers in
        assert runner.aggregator_config is not None
        db = Database(runner.aggregator_config.influxdb)

        def windows() -> list[dict]:
            return [r for s in db.query("SELECT * FROM counts WHERE device = 'cam-gate'") for r in rows(s)]

        assert wait_until(lambda: max((r["total_in"], r["total_out"]) for r in windows()) == totals)
        assert (sum(r["in"] for r in windows()), sum(r["out"] for r in windows())) == totals

        # the control room's daily report of it
        day = red.time.astimezone(reports.ZoneInfo(small_site.site.timezone)).date()
        report = reports.collect(small_site, db, "day", day)
        written = reports.write(report, tmp_path / "reports")
        assert report.peaks["lane"][0] >= 3
        assert report.level_hours["lane"]["red"] > 0
        assert report.entrances["gate"] == totals
        assert {p.suffix for p in written} >= {".md", ".csv", ".png"}
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written if p.suffix == ".png")
        db.close()
    finally:
        if inbox is not None:
            inbox.close()
        runner.stop()

    # and nothing the demo started is still running
    assert all(a.process is not None and a.process.poll() is not None for a in runner.agents)
    assert runner.broker is not None
    assert runner.broker.process is None
    assert runner.database is not None
    assert runner.database.process is None


def test_the_traffic_devices_deliver_the_day_whole_and_the_zones_match_the_truth(tmp_path: Path) -> None:
    site = load_site(EXAMPLE_SITE)
    runner = start(SiteRunner(site, tmp_path / "demo", [], speed=60, start=dtime(8, 0)))
    assert runner.aggregator_config is not None
    db = Database(runner.aggregator_config.influxdb)

    def stored() -> dict[str, dict]:
        query = 'SELECT sum("in") AS i, sum(out) AS o, count(seq) AS n FROM counts GROUP BY device'
        return {s["tags"]["device"]: next(iter(rows(s))) for s in db.query(query)}

    try:
        traffic = runner.traffic
        assert traffic is not None
        # the day so far at once, then live: a few live minutes, then the devices stop between two minutes
        assert wait_until(lambda: traffic.minute >= traffic.start_minute + 5, seconds=120)
        # live, a receiver's `alerts state --json` is what the demo's view shows (the stored occupancy), as of
        # a moment within the last wall-clock minute
        assert runner.broker is not None
        login = runner.broker.files.folder / "logins" / "control-room" / "login.yaml"
        said = subprocess.run([sys.executable, "-m", "console", "alerts", "state", "--login", str(login), "--json",
                               "--wait", "20"], capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        states = {row["zone"]: row["state"] for row in json.loads(said.stdout)}
        assert all(states.values()), states
        newest = max(datetime.fromisoformat(state["time"].replace("Z", "+00:00")) for state in states.values())
        for zone, state in states.items():
            kept = db.query(f"SELECT occupancy FROM zones WHERE zone = '{zone}' AND time = '{state['time']}'")
            assert [row["occupancy"] for series in kept for row in rows(series)] == [state["occupancy"]], zone
            lag = newest - datetime.fromisoformat(state["time"].replace("Z", "+00:00"))
            assert lag.total_seconds() <= 60 * runner.speed, (zone, lag)  # a wall-clock minute of the replay
        traffic.stop()
        sent = sum(d.sim.seq for d in traffic.devices)
        assert wait_until(lambda: sum(r["n"] for r in stored().values()) >= sent, seconds=120)
        assert traffic.refused == 0
        for device in traffic.devices:
            totals = device.sim.totals[device.sim.lines[0]]
            found = stored()[device.sim.device]
            assert (found["i"], found["o"]) == (totals[0], totals[1])
            assert found["n"] == device.sim.seq  # one window a minute, none lost, none doubled
        # every zone's occupancy, as stored, is the true one at the last minute played
        occupancy = {s["tags"]["zone"]: next(iter(rows(s)))["o"]
                     for s in db.query("SELECT last(occupancy) AS o FROM zones GROUP BY zone")}  # fmt: skip
        for zone in site.zones:
            assert occupancy[zone.id] == traffic.traffic.occupancy[zone.id][traffic.minute], zone.id
        db.close()
    finally:
        runner.stop()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_demo_command_shows_the_site_and_ctrl_c_stops_everything(
    shared_assets: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    command = [sys.executable, "-m", "console", "demo", "--speed", "30", "--state-dir", str(tmp_path / "demo")]
    demo = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "LANEWATCH_ASSETS": str(shared_assets)})  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    watcher: subprocess.Popen | None = None
    try:
        assert wait_until(lambda: any("where things are" in line for line in lines), seconds=180), demo.stderr
        started = _descendants(demo.pid)
        assert len(started) >= 5  # broker, database, the aggregator's store process, two agents
        # the control room watches the notices with its own login while the demo stops
        (login,) = (tmp_path / "demo").glob("**/logins/control-room/login.yaml")
        watcher = subprocess.Popen([sys.executable, "-m", "console", "alerts", "watch", "--login", str(login)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(3)
    finally:
        demo.send_signal(stop)
        code = demo.wait(timeout=120)
    assert watcher is not None
    watcher.send_signal(signal.SIGINT)
    watched, _said = watcher.communicate(timeout=30)
    reader.join(timeout=10)
    screen = "".join(lines)
    errors = demo.stderr.read()  # type: ignore[union-attr]
    assert code == 0, errors
    assert "Traceback" not in errors
    # stopping the demo is not a site losing its counters: no zone goes UNKNOWN on the receivers' screens
    assert "LOST the broker" in _said  # it was connected until the demo's broker stopped
    assert "UNKNOWN" not in watched, watched
    for what in ("区域 zones", "衣锦坊 yijin", "cam-nanhou-north-a", "cam-gong-east", "最新通知 latest notices",
                 "Dashboards", "lanewatch report", "Stopped everything the demo started"):  # fmt: skip
        assert what in screen, what
    # Python's multiprocessing resource tracker leaves on its own once the demo has gone: give it a moment.
    assert wait_until(lambda: not _survivors(started), 10), [_command(pid) for pid in _survivors(started)]


def _survivors(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return str(pid)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in child_pids(pid):
        found += [child, *_descendants(child)]
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_with_a_broker_and_database_configured_the_demo_uses_them_and_starts_none(
    mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    remote = AggregatorConfig.model_validate({
        "broker": mosquitto.section("aggregator"),
        "influxdb": {"url": influxdb.url, "database": "demoremote"},
        "share_group": "demo-remote",
    })  # fmt: skip
    runner = start(SiteRunner(load_site(EXAMPLE_SITE), tmp_path / "demo", [], speed=60, start=dtime(7, 0),
                              remote=remote))  # fmt: skip
    try:
        assert runner.broker is None
        assert runner.database is None
        assert runner.broker_url == f"mqtts://{mosquitto.host}:{mosquitto.port}"
        db = Database(remote.influxdb)

        def windows() -> int:
            try:
                return sum(r["n"] for s in db.query("SELECT count(seq) AS n FROM counts") for r in rows(s))
            except Exception:  # not created yet
                return 0

        assert wait_until(lambda: windows() >= 20 * 30, seconds=120)  # the day so far from 20 devices, at least
        db.close()
    finally:
        runner.stop()
