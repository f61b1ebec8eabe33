"""`lanewatch agent selftest` as a technician runs it after installing a device."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_agent.sign import SimulatedSign
from harness.servers import Mosquitto, free_port

LANEWATCH = str(Path(sys.executable).with_name("lanewatch"))


def _config(tmp_path: Path, assets: Path, broker: dict, sign_port: str) -> Path:
    config = {
        "site": "sanfang-qixiang", "device": "cam-wenru-west", "entrance": "wenru-west",
        "source": str(assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4"),
        "model": str(assets / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"),
        "lines": [{"name": "gate", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
        "state_dir": str(tmp_path / "state"), "broker": broker,
        "sign": {"id": "sign-wenru-west", "port": sign_port, "timeout_s": 0.3, "retries": 1},
    }  # fmt: skip
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _selftest(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LANEWATCH, "agent", "selftest", "--config", str(config), "--timeout", "5"],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_healthy_device_passes(mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path, protocol: str) -> None:
    """The broker check logs in as the agent does: its protocol, TLS, password and certificate."""
    sign = SimulatedSign()
    login = mosquitto.section("cam-wenru-west", protocol=protocol)
    try:
        result = _selftest(_config(tmp_path, shared_assets, login, sign.port))
    finally:
        sign.close()
    assert result.returncode == 0, result.stdout
    for name in ("camera: 640x480 frame", "model: detect (ssd) ran in", "storage: outbox in",
                 f"broker: connected to 127.0.0.1:{mosquitto.port} (MQTT {protocol}) with TLS",
                 "sign: sign-wenru-west answered"):  # fmt: skip
        assert f"PASS {name}" in result.stdout, result.stdout
    assert f"as cam-wenru-west:selftest (p{'5' if protocol == '5' else '2'}," in mosquitto.log_tail(400)
    assert "clock:" in result.stdout


def test_each_failure_is_named_with_what_to_do(shared_assets: Path, tmp_path: Path) -> None:
    sign = SimulatedSign()
    sign.silent = True  # no power
    try:
        result = _selftest(_config(tmp_path, shared_assets, {"port": free_port()}, sign.port))
    finally:
        sign.close()
    assert result.returncode == 1
    assert "FAIL broker: 127.0.0.1:" in result.stdout
    assert "-> check broker.host/port, the network, and the firewall" in result.stdout
    assert "FAIL sign: sign-wenru-west did not answer" in result.stdout
    assert "PASS camera" in result.stdout
    assert "Traceback" not in result.stderr
    sign = SimulatedSign()
    sign.silent = True
    try:
        config = _config(tmp_path, shared_assets, {"port": free_port()}, sign.port)
        as_json = subprocess.run([LANEWATCH, "agent", "selftest", "--config", str(config), "--timeout", "5", "--json"],
                                 capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    finally:
        sign.close()
    assert as_json.returncode == 1
    checks = {c["name"]: c for c in map(json.loads, as_json.stdout.splitlines())}  # one object per line
    assert checks["broker"]["outcome"] == "fail"
    assert "check broker.host/port" in checks["broker"]["hint"]
    assert checks["camera"]["outcome"] == "pass"


@pytest.mark.parametrize("login", ["none", "no TLS", "wrong password"])
def test_a_device_not_set_up_for_the_sites_broker_is_told_what_is_missing(
    mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path, login: str
) -> None:
    """The site's broker speaks TLS only and wants a login: a device configured without them is told so,
    not left guessing about certificates."""
    sections = {
        "none": {"port": mosquitto.port},
        "no TLS": {"port": mosquitto.port, "username": "cam-wenru-west"},
        "wrong password": mosquitto.section("cam-wenru-west", password_file=str(tmp_path / "wrong")),
    }
    (tmp_path / "wrong").write_text("not-the-password\n")
    sign = SimulatedSign()
    try:
        result = _selftest(_config(tmp_path, shared_assets, sections[login], sign.port))
    finally:
        sign.close()
    assert result.returncode == 1
    assert f"FAIL broker: 127.0.0.1:{mosquitto.port}" in result.stdout
    if login == "wrong password":
        assert "refused: Bad user name or password" in result.stdout or "refused: Not authorized" in result.stdout
        assert "-> check the username and password file for this device" in result.stdout
    else:
        assert "speaks TLS only: set broker.ca_file, cert_file, key_file, username and password_file" in result.stdout


def test_calibrate_draws_lines_directions_and_people(shared_assets: Path, tmp_path: Path) -> None:
    import cv2

    config = _config(tmp_path, shared_assets, {"port": free_port()}, "/dev/null")
    out = tmp_path / "calibration.png"
    result = subprocess.run([LANEWATCH, "agent", "calibrate", "--config", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = re.match(rf"wrote {out}: 1 counting line\(s\), (\d+) people tracked over (\d+) frames", result.stdout)
    assert said is not None, result.stdout
    # one box per person tracked, not the detector's overlapping boxes: as many as the ground truth
    # has people in the last frame (within one: a person at the picture's edge)
    frames = int(said[2])
    truth = sum(1 for row in (shared_assets / "videos" / "TUD-Campus" / "gt" / "gt.txt").read_text().splitlines()
                if row.split(",")[0] == str(frames))  # fmt: skip
    assert abs(int(said[1]) - truth) <= 1
    picture = cv2.imread(str(out))
    # the header (device, entrance, model, time) sits on a dark plate at the top, readable on any scene
    header = picture[4:16, 40:200].astype(int)
    assert np.all(header.max(axis=2) - header.min(axis=2) < 12)  # white on dark grey: none of the scene
    assert np.mean(header.max(axis=2) < 60) > 0.3
    assert np.mean(header.max(axis=2) > 150) > 0.1
    assert picture.shape == (480, 640, 3)
    # the counting line (x = 320) is drawn in its colour, top to bottom
    column = picture[:, 319:322].reshape(-1, 3)
    assert np.mean(np.all(np.abs(column.astype(int) - (0, 200, 255)) < 40, axis=1)) > 0.5


def test_calibrate_without_its_model_says_so_in_one_line(shared_assets: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, shared_assets, {"port": free_port()}, "/dev/null")
    config.write_text(config.read_text().replace("detect.tflite", "missing.tflite"))
    out = tmp_path / "c.png"
    result = subprocess.run([LANEWATCH, "agent", "calibrate", "--config", str(config), "--out", str(out)],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "missing.tflite" in result.stderr
    assert not out.exists()
