"""A device from its bundle: made on the centre from the inventory and the broker folder, installed with
one command, counting over TLS into the site's database; its files kept from other eyes."""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_agent.config import load_agent_config
from edge_agent.sign import SimulatedSign
from harness.servers import InfluxDB, Mosquitto
from provisioning import cli as site_cli
from tests.aggregators import AggregatorProcess, stored_totals
from tests.conftest import EXAMPLE_SITE, run_cli, wait_until

DEVICE = "cam-yijin-west"  # its inventory line is the picture's vertical middle, as the footage's ground truth
LANEWATCH = str(Path(sys.executable).with_name("lanewatch"))


def yolo(assets: Path) -> Path:
    return assets / "models" / "yolov8n_coco" / "yolov8n_full_integer_quant.tflite"


def bundle(broker: Mosquitto, out: Path, *args: str) -> Path:
    result = run_cli("site", "device-bundle", str(EXAMPLE_SITE), str(broker.files.folder), DEVICE,
                     "--broker-host", "127.0.0.1", "--out", str(out), *args)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out / DEVICE


def install(folder: Path, root: Path, user: str = "", *args: str) -> subprocess.CompletedProcess:
    user = user or pwd.getpwuid(os.geteuid()).pw_name
    return subprocess.run([LANEWATCH, "agent", "install", str(folder), "--root", str(root), "--user", user, *args],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="the bundle's installer runs as root, as on a device")
def test_a_device_installed_offline_from_its_bundle_passes_its_selftest_and_its_first_window_is_stored(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, shared_assets: Path, tmp_path: Path
) -> None:
    """The technician's commands: the bundle on the centre, its `install` on the device with no package
    index, then what the unit runs."""
    kind = "import platform, sys; print(platform.machine() + ':%d.%d' % sys.version_info[:2])"
    python = subprocess.run(["python3", "-c", kind], capture_output=True, text=True, check=True).stdout.strip()
    made = run_cli("site", "wheelhouse", str(tmp_path / "wheels"), "--target", python)
    assert made.exit_code == 0, made.output
    clip = shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4"
    sign = SimulatedSign()
    folder = bundle(fresh_mosquitto, tmp_path / "bundles", "--model", str(yolo(shared_assets)), "--source", str(clip),
                    "--sign-port", sign.port, "--wheelhouse", str(tmp_path / "wheels"))  # fmt: skip
    # a device: no pip configuration, no package index reachable
    offline = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "VIRTUAL_ENV"))}
    offline.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple",
                   LANEWATCH_VENV=str(tmp_path / "venv"))  # fmt: skip
    try:
        installed = subprocess.run([str(folder / "install"), "--root", str(tmp_path / "device"), "--user", "root"],
                                   capture_output=True, text=True, timeout=900, check=False, env=offline)  # fmt: skip
    finally:
        sign.close()
    # the software from the bundle alone; camera, model, licence, storage, the broker over TLS, the sign
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "installing LaneWatch from the bundle's" in installed.stderr
    assert "PASS broker: connected to 127.0.0.1" in installed.stdout
    assert "with TLS" in installed.stdout
    assert "PASS sign: sign-yijin-west answered" in installed.stdout
    assert "WARN licence: yolov8n_full_integer_quant.tflite: licence AGPL-3.0" in installed.stdout
    assert "next: sudo systemctl enable --now lanewatch-agent" in installed.stdout

    config = tmp_path / "device" / "etc" / "lanewatch" / "device.yaml"
    unit = (tmp_path / "device" / "etc" / "systemd" / "system" / "lanewatch-agent.service").read_text()
    command = f"{tmp_path / 'venv'}/bin/lanewatch agent run --config {config}"
    assert f"ExecStart={command}\n" in unit
    aggregator = AggregatorProcess(tmp_path, fresh_mosquitto, influxdb, "bundled")
    try:
        aggregator.start().wait_connected()
        # what the unit runs, with what the bundle installed and nothing else
        counted = subprocess.run(command.split(), capture_output=True, text=True, timeout=300, check=False,
                                 env=offline, cwd="/")  # fmt: skip
        assert counted.returncode == 0, counted.stderr
        assert wait_until(lambda: stored_totals(influxdb, "bundled").get((DEVICE, "gate"), (0, 0, 0))[2] >= 1)
        total_in, total_out, _windows = stored_totals(influxdb, "bundled")[(DEVICE, "gate")]
        assert (total_in, total_out) in {(4, 0), (4, 1)}  # the footage's ground truth (README of the assets)
    finally:
        aggregator.cleanup()


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root (as on a device)")
def test_the_bundle_and_the_installed_device_keep_secrets_from_other_eyes(
    mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path
) -> None:
    folder = bundle(mosquitto, tmp_path / "bundles", "--model", str(yolo(shared_assets)))
    assert mode(folder) == 0o700
    assert mode(folder / "password") == mode(folder / "device.key") == 0o600
    assert mode(folder / "install") & 0o100

    result = install(folder, tmp_path / "device", "nobody", "--no-selftest")
    assert result.returncode == 0, result.stderr
    etc, state = tmp_path / "device" / "etc" / "lanewatch", tmp_path / "device" / "var" / "lib" / "lanewatch"
    service = pwd.getpwnam("nobody")
    # the agent reads its configuration and secrets but cannot change them; nobody else can read them
    assert (etc.stat().st_uid, etc.stat().st_gid, mode(etc)) == (0, service.pw_gid, 0o750)
    for name in ("device.yaml", "password", "device.key"):
        path = etc / name
        assert (path.stat().st_uid, path.stat().st_gid, mode(path)) == (0, service.pw_gid, 0o640), name
    assert (state.stat().st_uid, mode(state)) == (service.pw_uid, 0o750)
    # a reinstall (a replacement device, a new bundle) keeps the state
    (state / "outbox.db").write_bytes(b"kept")
    assert install(folder, tmp_path / "device", "nobody", "--no-selftest").returncode == 0
    assert (state / "outbox.db").read_bytes() == b"kept"


def test_the_defaults_agree_port_login_tls_and_state_folder(
    mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path
) -> None:
    folder = bundle(mosquitto, tmp_path / "bundles", "--model", str(yolo(shared_assets)))
    config = load_agent_config(folder / "device.yaml")
    assert (config.broker.port, config.broker.username) == (mosquitto.port, DEVICE)
    assert config.broker.ca_file == folder / "ca.crt"
    assert config.broker.password() == mosquitto.files.secret(DEVICE)
    assert str(config.state_dir) == "/var/lib/lanewatch"  # the unit's StateDirectory=lanewatch
    unit = (folder / "lanewatch-agent.service").read_text()
    assert "StateDirectory=lanewatch\n" in unit
    # by hand too: device-config points at the port broker-config listens on by default
    defaults = {
        command: {param.name: param.default for param in site_cli.site.commands[command].params}
        for command in ("device-config", "broker-config")
    }
    assert defaults["device-config"]["broker_port"] == defaults["broker-config"]["port"]


def test_a_model_whose_licence_is_unknown_needs_one_stated_and_the_device_shows_it(
    mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path
) -> None:
    ssd = shared_assets / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"
    refused = run_cli("site", "device-bundle", str(EXAMPLE_SITE), str(mosquitto.files.folder), DEVICE,
                      "--model", str(ssd), "--out", str(tmp_path / "bundles"))  # fmt: skip
    assert refused.exit_code == 1
    assert "give --model-licence" in refused.stderr
    assert not (tmp_path / "bundles" / DEVICE).exists()
    folder = bundle(mosquitto, tmp_path / "bundles", "--model", str(ssd), "--model-licence", "Apache-2.0")
    assert yaml.safe_load((folder / "models" / "model.yaml").read_text())["licence"] == "Apache-2.0"
    assert "Apache-2.0 (permissive" in (folder / "README.txt").read_text()


def test_rotating_a_device_secret_locks_out_the_old_one(
    fresh_mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path
) -> None:
    from edge_agent.selftest import _broker

    old = load_agent_config(bundle(fresh_mosquitto, tmp_path / "old", "--model", str(yolo(shared_assets)))
                            / "device.yaml")  # fmt: skip
    assert _broker(old, 10).outcome == "pass"
    new = load_agent_config(bundle(fresh_mosquitto, tmp_path / "new", "--model", str(yolo(shared_assets)),
                                   "--rotate") / "device.yaml")  # fmt: skip
    assert new.broker.password() != old.broker.password()
    assert fresh_mosquitto.process is not None
    fresh_mosquitto.process.send_signal(signal.SIGHUP)  # `systemctl reload mosquitto`
    assert wait_until(lambda: _broker(old, 10).outcome == "fail", 20)
    assert _broker(new, 10).outcome == "pass"


def test_an_incomplete_bundle_says_what_is_missing(mosquitto: Mosquitto, shared_assets: Path, tmp_path: Path) -> None:
    folder = bundle(mosquitto, tmp_path / "bundles", "--model", str(yolo(shared_assets)))
    (folder / "device.key").unlink()
    result = install(folder, tmp_path / "device", "", "--no-selftest")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"Error: {folder} is not a complete device bundle")
    assert "device.key missing" in result.stderr
    assert not (tmp_path / "device" / "etc").exists()
