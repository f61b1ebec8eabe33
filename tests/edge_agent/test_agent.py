"""`lanewatch agent run` end to end: real footage, the real model, a real broker, a real crash."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.servers import Mosquitto
from lanewatch import contract
from tests.conftest import Listener, connected, wait_until
from tests.core.test_contract import schema_for

SITE, DEVICE = "sanfang-qixiang", "cam-wenru-west"
LANEWATCH = str(Path(sys.executable).with_name("lanewatch"))


def write_config(tmp_path: Path, broker: Mosquitto, assets: Path, realtime: bool, source: str = "") -> Path:
    config = {
        "site": SITE, "device": DEVICE, "entrance": "wenru-west",
        "source": source or str(assets / "videos" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"), "realtime": realtime,
        "model": str(assets / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"),
        "lines": [{"name": "gate", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
        "window_s": 1.0, "heartbeat_s": 0.2, "state_dir": str(tmp_path / "state"),
        "broker": broker.section(DEVICE, keepalive_s=5),
    }  # fmt: skip
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_agent(config: Path) -> subprocess.Popen:
    """``lanewatch agent run`` in the background, as systemd would start it."""
    return subprocess.Popen([LANEWATCH, "agent", "run", "--config", str(config)], stderr=subprocess.DEVNULL)


def run_agent(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LANEWATCH, "agent", "run", "--config", str(config)], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_a_recording_becomes_count_windows_heartbeats_and_availability(
    fresh_mosquitto: Mosquitto, listener: Listener, shared_assets: Path, tmp_path: Path
) -> None:
    result = run_agent(write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=False))
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: len(listener.windows()) >= 8)
    windows = listener.windows()
    assert sorted(w["seq"] for w in windows) == list(range(8))  # 179 frames at 25 fps: 8 one-second windows
    assert (sum(w["in"] for w in windows), sum(w["out"] for w in windows)) == (1, 1)
    last = max(windows, key=lambda w: w["seq"])
    assert (last["total_in"], last["total_out"]) == (1, 1)
    contract_fields = set(schema_for("count")["properties"])
    assert all(set(window) == contract_fields for window in windows)  # nothing but the contract's fields
    assert listener.heartbeats
    assert all(h["camera"] == "ok" for h in listener.heartbeats)
    assert wait_until(lambda: listener.availability[-1:] == ["offline"])
    assert "online" in listener.availability


def test_totals_continue_after_a_restart(
    fresh_mosquitto: Mosquitto, listener: Listener, shared_assets: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=False)
    assert run_agent(config).returncode == 0
    assert run_agent(config).returncode == 0
    assert wait_until(lambda: len(listener.windows()) >= 16)
    boots = list(dict.fromkeys(w["boot_id"] for w in listener.windows()))
    assert len(boots) == 2
    second = sorted((w for w in listener.windows() if w["boot_id"] == boots[1]), key=lambda w: w["seq"])
    assert second[0]["seq"] == 0  # a new boot counts its messages from 0 ...
    assert (second[-1]["total_in"], second[-1]["total_out"]) == (2, 2)  # ... and its totals continue


def test_kill_9_mid_stream_loses_no_window_and_totals_continue(
    fresh_mosquitto: Mosquitto, listener: Listener, shared_assets: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True)
    agent = start_agent(config)
    try:
        assert wait_until(lambda: len(listener.windows()) >= 3, seconds=120)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    assert wait_until(lambda: listener.availability[-1:] == ["offline"], seconds=60)  # the Last Will

    fast = yaml.safe_load(config.read_text())
    fast["realtime"] = False
    config.write_text(yaml.safe_dump(fast))
    assert run_agent(config).returncode == 0

    def both_boots_complete() -> bool:  # boot 2 sent all 8 windows and boot 1's backlog has arrived
        boots: dict[str, list[int]] = {}
        for w in listener.windows():
            boots.setdefault(w["boot_id"], []).append(w["seq"])
        return (
            len(boots) == 2
            and all(sorted(s) == list(range(len(s))) for s in boots.values())
            and 8 in map(len, boots.values())
        )

    assert wait_until(both_boots_complete)

    windows = listener.windows()
    first_boot, second_boot = list(dict.fromkeys(w["boot_id"] for w in windows))
    before = sorted((w for w in windows if w["boot_id"] == first_boot), key=lambda w: w["seq"])
    after = sorted((w for w in windows if w["boot_id"] == second_boot), key=lambda w: w["seq"])
    assert [w["seq"] for w in before] == list(range(len(before)))  # every committed window arrived
    for earlier, later in zip(before, before[1:]):
        assert later["total_in"] == earlier["total_in"] + later["in"]
    # the restart continued from the last committed totals
    assert after[0]["total_in"] == before[-1]["total_in"] + after[0]["in"]
    assert after[0]["total_out"] == before[-1]["total_out"] + after[0]["out"]


def test_a_broken_device_config_is_reported_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("site: sanfang-qixiang\ndevice: Cam 1\nentrance: e1\nsource: camera:0\nmodel: m.tflite\n"
                    "lines: []\nwindow_s: -5\nstate_dir: /tmp/x\n")  # fmt: skip
    result = subprocess.run([LANEWATCH, "agent", "run", "--config", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{path}:2: device: invalid id 'Cam 1'" in result.stderr
    assert f"{path}:6: lines: List should have at least 1 item after validation, not 0" in result.stderr
    assert f"{path}:7: window_s: must be > 0.0, got -5" in result.stderr


def test_a_notice_for_the_entrance_reaches_its_sign(
    fresh_mosquitto: Mosquitto, listener: Listener, shared_assets: Path, tmp_path: Path
) -> None:
    from edge_agent.sign import SimulatedSign
    from tests.samples import samples

    sign = SimulatedSign()
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True)
    settings = yaml.safe_load(config.read_text())
    settings["sign"] = {"id": "sign-wenru-west", "port": sign.port, "template_zh": "{level_zh}：{text}"}
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    aggregator = connected(fresh_mosquitto, "aggregator", "test")
    agent = start_agent(config)
    try:
        assert wait_until(lambda: "online" in listener.availability, seconds=60)
        notice = samples()["entrance_notice"]
        topic = contract.topic_for(notice, entrance="wenru-west")
        elsewhere = contract.topic_for(notice.model_copy(update={"zone": "yijin"}), entrance="yijin-west")
        aggregator.publish(elsewhere, contract.encode(notice), qos=1).wait_for_publish(10)  # not this entrance's
        aggregator.publish(topic, contract.encode(notice), qos=1).wait_for_publish(10)
        assert wait_until(lambda: sign.displayed is not None)
        assert sign.displayed == ("R", f"已满：{notice.text.zh}", notice.text.en)
        assert sign.received == 1
        assert wait_until(lambda: any(h["sign"] == "ok" for h in listener.heartbeats))
        sign.silent = True  # the sign loses power: the next notice is retried, then reported failed
        second = notice.model_copy(update={"id": "f" * 32})
        aggregator.publish(topic, contract.encode(second), qos=1).wait_for_publish(10)
        assert wait_until(lambda: listener.heartbeats[-1]["sign"] == "failed", seconds=30)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        sign.close()
        aggregator.disconnect()
        aggregator.loop_stop()
    assert agent.returncode == 0


def test_a_sign_unplugged_mid_run_never_stops_the_counting_and_shows_the_newest_notice_when_plugged_back(
    fresh_mosquitto: Mosquitto, listener: Listener, shared_assets: Path, tmp_path: Path
) -> None:
    """The sign's USB cable pulled while the device counts, then plugged back in (udev's name for it is a
    link to a pseudo-terminal here): windows keep arriving, the heartbeat says the sign failed, and the
    notice sent meanwhile is on the sign once it is back."""
    from edge_agent.sign import SimulatedSign
    from tests.samples import samples

    port = tmp_path / "ttyUSB0"
    sign = SimulatedSign()
    port.symlink_to(sign.port)
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True)
    settings = yaml.safe_load(config.read_text())
    settings.update(loop=True, sign={"id": "sign-wenru-west", "port": str(port), "timeout_s": 0.3, "retries": 1})
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))
    aggregator = connected(fresh_mosquitto, "aggregator", "test")
    agent = start_agent(config)
    notice = samples()["entrance_notice"]
    topic = contract.topic_for(notice, entrance="wenru-west")
    try:
        assert wait_until(lambda: "online" in listener.availability, seconds=60)
        aggregator.publish(topic, contract.encode(notice), qos=1).wait_for_publish(10)
        assert wait_until(lambda: sign.displayed is not None)
        sign.close()  # unplugged: the device node goes away
        port.unlink()
        second = notice.model_copy(update={"id": "e" * 32, "level": "yellow"})
        aggregator.publish(topic, contract.encode(second), qos=1).wait_for_publish(10)
        assert wait_until(lambda: listener.heartbeats[-1]["sign"] == "failed", seconds=30)
        unplugged = len(listener.windows())
        assert wait_until(lambda: len(listener.windows()) >= unplugged + 3, seconds=30)  # counting goes on
        assert agent.poll() is None
        sign = SimulatedSign()  # plugged back in
        port.symlink_to(sign.port)
        assert wait_until(lambda: sign.displayed is not None, seconds=30)
        assert sign.displayed is not None
        assert sign.displayed[0] == "Y"  # the notice sent while it was away, not the old one
        assert wait_until(lambda: listener.heartbeats[-1]["sign"] == "ok", seconds=30)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        sign.close()
        aggregator.disconnect()
        aggregator.loop_stop()
    assert agent.returncode == 0


def test_systemd_hears_ready_and_the_watchdog(
    fresh_mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    address = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(address))
    server.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True)
    agent = start_agent(config)
    said: list[str] = []
    try:
        while agent.poll() is None and not ({"READY=1", "WATCHDOG=1"} <= {s.split("\n")[0] for s in said}):
            try:
                said.append(server.recv(4096).decode())
            except TimeoutError:
                continue
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        server.close()
    assert any(s.startswith("READY=1\nSTATUS=counting 1 line(s) at 640x480") for s in said)
    assert "WATCHDOG=1" in said


def test_the_systemd_unit_restarts_and_watches_the_agent() -> None:
    import configparser

    from tests.conftest import REPO

    unit = configparser.ConfigParser(strict=False)
    unit.read(REPO / "firmware_config" / "systemd" / "lanewatch-agent.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "always"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].endswith("lanewatch agent run --config /etc/lanewatch/device.yaml")
    assert service["User"] != "root"
