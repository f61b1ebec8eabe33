"""`lanewatch alerts`: what a staff desk sees — every zone's level at once, and notices as they come."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt
import yaml

from aggregator.config import InfluxConfig
from aggregator.influx import Database, rows
from harness import simulated
from harness.servers import InfluxDB, Mosquitto
from harness.simulated import Publisher
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.aggregator.test_rollup import Device
from tests.aggregators import AggregatorProcess
from tests.conftest import EXAMPLE_SITE, connected, run_cli, wait_until
from tests.samples import NOW, samples


def receiver_config(tmp_path: Path, broker: Mosquitto, user: str = "control-room") -> Path:
    """A desk's YAML: its own login (password file, client certificate) on the site's broker."""
    path = tmp_path / "desk.yaml"
    path.write_text(yaml.safe_dump({"broker": broker.section(user)}))
    return path


def sender(broker: Mosquitto) -> mqtt.Client:
    """The aggregator, the one who may publish levels and notices."""
    return connected(broker, "aggregator", "test")


def test_state_prints_every_zone_with_its_retained_level(fresh_mosquitto: Mosquitto, tmp_path: Path) -> None:
    client = sender(fresh_mosquitto)
    red = samples()["level"]
    green = red.model_copy(update={"zone": "yijin", "level": "green", "occupancy": 300, "capacity": 1300,
                                   "reason": "occupancy 23% of capacity 1300"})  # fmt: skip
    for state in (red, green):
        client.publish(c.topic_for(state), c.encode(state), qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    result = run_cli("alerts", "state", "--config", str(receiver_config(tmp_path, fresh_mosquitto)), "--wait", "2")
    assert result.exit_code == 0, result.stderr
    *zones, phones = result.stdout.splitlines()[1:]
    lines = {line.split()[0]: line for line in zones}
    assert set(lines) == {"sfqx", "west", "east", "yijin", "wenru", "guanglu", "nanhou", "alleys-north", "alleys-south"}
    # the example site's people have phone channels, and no forwarder runs here: the control room is told
    assert phones == "手机通知 phones: forwarder NOT RUNNING (no forwarder has reported): no notice reaches a phone"
    assert "RED" in lines["nanhou"]
    assert "5,612 / 5,500" in lines["nanhou"]
    assert "occupancy 102% of capacity" in lines["nanhou"]
    assert "GREEN" in lines["yijin"]
    assert "no level published yet" in lines["wenru"]


def test_watch_shows_the_notices_of_a_grid_and_the_grids_inside_it(fresh_mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = receiver_config(tmp_path, fresh_mosquitto)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "console", "alerts", "watch", "--config", str(config), "--zone", "east",
         "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    east = samples()["zone_notice"]  # Nanhou Street, inside the east grid
    west = east.model_copy(update={"zone": "yijin", "id": "0" * 31 + "1", "time": NOW})
    client = sender(fresh_mosquitto)
    deadline = time.monotonic() + 30
    while watcher.poll() is None and time.monotonic() < deadline:  # until its subscription is up
        for notice in (west, east):
            client.publish(c.topic_for(notice), c.encode(notice), qos=1).wait_for_publish(10)
        time.sleep(0.3)
    client.disconnect()
    client.loop_stop()
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "watching notices for east of sanfang-qixiang" in err
    first, second = out.splitlines()  # one notice, shown once however often it came
    assert "RED" in first
    assert "南后街 Nanhou Street (nanhou) 5,612/5,500 rising, was yellow" in first
    assert "close 南后街北口 Nanhou Street north gate; meter 南后街南口 Nanhou Street south gate" in first
    assert "divert to 安民巷·宫巷·吉庇巷 Anmin, Gong and Jibi Alleys" in first
    assert "南后街已满" in second
    assert "yijin" not in out


def test_watch_names_the_zones_when_given_an_unknown_one() -> None:
    result = run_cli("alerts", "watch", "--zone", "nowhere")
    assert result.exit_code == 2
    assert "no zone 'nowhere'; zones: sfqx, west, east" in result.stderr


def test_an_officer_reports_a_headcount_of_their_lane_and_the_aggregator_re_anchors_it(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    """`alerts headcount wenru 480` as Wenru's officer: acknowledged by the broker, applied by the real
    aggregator, on the record with the officer's name; counting a lane that is not yours is refused by the
    broker's ACL, and a forged name by the aggregator."""
    influxdb.query("DROP DATABASE headcounts")
    process = AggregatorProcess(tmp_path, fresh_mosquitto, influxdb, "headcounts", instance="agg-headcount")
    try:
        process.start().wait_connected()
        gate = Device("cam-wenru-west", "gate")
        window = gate.window(datetime.now(timezone.utc), 300, 20)
        with closing(Publisher(fresh_mosquitto.login)) as publisher:
            assert publisher.send([(c.topic_for(window), c.encode(window))]) == 1
        officer = receiver_config(tmp_path, fresh_mosquitto, "officer-huang")
        result = run_cli("alerts", "headcount", "wenru", "480", "--config", str(officer))
        assert result.exit_code == 0, result.output
        assert "文儒坊" in result.output
        assert "officer-huang" in result.output
        db = Database(InfluxConfig(url=influxdb.url, database="headcounts"))

        def recorded() -> list[dict]:
            try:
                return [r for s in db.query("SELECT * FROM corrections WHERE reason = 'headcount'") for r in rows(s)]
            except Exception:  # not written yet
                return []

        assert wait_until(lambda: len(recorded()) == 3, 30), process.log()[-3000:]  # wenru, west, sfqx
        assert {(r["zone"], r["by"], r["observed"]) for r in recorded()} == {
            (zone, "officer-huang", 480) for zone in ("wenru", "west", "sfqx")
        }
        db.close()
        not_theirs = run_cli("alerts", "headcount", "guanglu", "100", "--config", str(officer))
        assert not_theirs.exit_code != 0
        assert "not an officer or staff member of guanglu" in not_theirs.output
        forged = run_cli("alerts", "headcount", "guanglu", "100", "--config", str(officer), "--person", "officer-zheng")
        assert forged.exit_code != 0
        assert "refused" in forged.output  # the ACL: officer-huang may write only under their own name
    finally:
        process.cleanup()


def test_state_shows_every_zone_as_it_is_now_not_as_it_was_at_its_last_level_change(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    """Wenru fills to yellow, then more people come in without changing its level: `alerts state` shows
    the occupancy now, from the state the real aggregator keeps current on the broker."""
    influxdb.query("DROP DATABASE statenow")
    process = AggregatorProcess(tmp_path, fresh_mosquitto, influxdb, "statenow", instance="agg-statenow")
    config = receiver_config(tmp_path, fresh_mosquitto)
    try:
        process.start().wait_connected()
        fleet = simulated.devices(load_site(EXAMPLE_SITE))
        start = datetime.now(timezone.utc) - timedelta(minutes=3)

        def minute(end: datetime, people: int) -> list[tuple[str, bytes]]:
            """A minute at every device: ``people`` walk into Wenru at its west gate, nobody elsewhere."""
            out = []
            for device in fleet:
                if end == start:
                    online = c.Availability(site=device.site, device=device.device, state="online",
                                            boot_id=device.boot_id)  # fmt: skip
                    out.append((c.topic_for(online), c.encode(online)))
                    out.append((c.topic_for(device.heartbeat(end)), c.encode(device.heartbeat(end))))
                for line in device.lines:
                    window = device.record(line, end, 60.0, people if device.device == "cam-wenru-west" else 0, 0)
                    out.append((c.topic_for(window), c.encode(window)))
            return out

        def wenru() -> Optional[dict]:
            result = run_cli("alerts", "state", "--config", str(config), "--wait", "1", "--json")
            assert result.exit_code == 0, result.stderr
            return next(z["state"] for z in json.loads(result.stdout) if z["zone"] == "wenru")

        with closing(Publisher(fresh_mosquitto.login)) as publisher:
            sent = minute(start, 1000)  # 1,000 of 1,200: yellow
            assert publisher.send(sent) == len(sent)
            assert wait_until(lambda: (wenru() or {}).get("level") == "yellow", 30), process.log()[-3000:]
            sent = minute(start + timedelta(minutes=1), 60)  # 1,060: still yellow
            assert publisher.send(sent) == len(sent)
            assert wait_until(lambda: (wenru() or {}).get("occupancy") == 1060, 30), (wenru(), process.log()[-3000:])
        state = wenru()
        assert state is not None
        assert state["level"] == "yellow"
        assert state["since"] < state["time"]  # the level held since the first window, the numbers of the second
        lines = run_cli("alerts", "state", "--config", str(config), "--wait", "1").stdout
        assert "1,060 / 1,200" in next(line for line in lines.splitlines() if "wenru" in line)
    finally:
        process.cleanup()


def test_watch_says_at_once_when_it_loses_the_broker_and_when_it_is_back_with_the_levels_kept(
    fresh_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Silence must never pass for calm: a watcher whose broker goes away says so at once, says when it is
    back, shows every zone's level as the broker kept it, and goes on showing notices."""
    client = sender(fresh_mosquitto)
    red = samples()["level"]  # Nanhou Street, red
    client.publish(c.topic_for(red), c.encode(red), qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    config = receiver_config(tmp_path, fresh_mosquitto)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "console", "alerts", "watch", "--config", str(config), "--zone", "east", "--count", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    status: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [status.put(line) for line in watcher.stderr or ()], daemon=True).start()

    def said(words: str, seconds: float = 60) -> list[str]:
        """The watcher's status lines up to the first with ``words`` (fails the test if none comes)."""
        lines, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                lines.append(status.get(timeout=1))
            except queue.Empty:
                continue
            if words in lines[-1]:
                return lines
        raise AssertionError(f"the watcher never said {words!r}; it said {lines}")

    try:
        said("connected to 127.0.0.1")
        assert any("nanhou" in line and "RED" in line for line in said("5,612 / 5,500"))
        fresh_mosquitto.stop()
        lost = said("LOST the broker")[-1]
        assert "NO NOTICES CAN ARRIVE" in lost
        fresh_mosquitto.start()
        back = said("connected to 127.0.0.1")[-1]
        assert "min away" in back
        said("5,612 / 5,500")  # the levels again, as the broker kept them
        notice = samples()["zone_notice"]
        client = sender(fresh_mosquitto)
        client.publish(c.topic_for(notice), c.encode(notice), qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        out, _err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 0
    assert "南后街 Nanhou Street (nanhou) 5,612/5,500" in out


def test_an_officer_logs_in_with_the_folder_broker_config_made_for_them(
    fresh_mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """`site broker-config` writes each person a folder to hand over; its login.yaml works from anywhere
    as it is, and its secrets are theirs alone."""
    folder = fresh_mosquitto.files.folder / "logins" / "officer-huang"
    login = folder / "login.yaml"
    text = login.read_text(encoding="utf-8")
    assert "黄明 (officer-huang)" in text
    assert "lanewatch alerts watch --login login.yaml" in text
    assert all((folder / name).stat().st_mode & 0o077 == 0 for name in ("officer-huang.key", "officer-huang.password"))
    client = sender(fresh_mosquitto)
    red = samples()["level"]  # Nanhou Street: not officer-huang's (west); Wenru is
    mine = red.model_copy(update={"zone": "wenru", "capacity": 1200, "occupancy": 700, "level": "green"})
    for state in (red, mine):
        client.publish(c.topic_for(state), c.encode(state), qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-m", "console", "alerts", "state", "--login", str(login), "--wait", "2"],
                            capture_output=True, text=True, cwd=elsewhere, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "700 / 1,200" in lines["wenru"]
    assert "no level published yet" in lines["nanhou"]  # the broker's ACL: officers read their own grids
