"""A device bundle: everything one counting device needs, made on the centre from the site inventory and
the broker folder, so that installing a device (or its replacement) is one command on it.

``lanewatch site device-bundle SITE BROKER_FOLDER DEVICE --model FILE`` writes ``<out>/<device>/``:

- ``device.yaml``: the device's configuration, broker address, port, username and TLS filled in, paths
  relative to itself (``lanewatch agent run`` reads them from its folder);
- ``password``, ``device.key`` (mode 0600), ``device.crt``, ``ca.crt``: its login, from the broker folder;
- ``models/<file>`` and ``models/model.yaml``: the detector and the licence it is deployed under;
- ``lanewatch-agent.service``: the systemd unit;
- ``wheels/``: LaneWatch itself, and with ``--wheelhouse`` every wheel a device needs (no internet);
- ``install``: run on the device as root; ``README.txt``: what is inside and what to do.

The folder is the owner's only (0700): it holds a secret. The same bundle reinstalls a replacement
device; ``--rotate`` gives the device a new password and certificate first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

import yaml

from edge_agent.config import device_config
from edge_agent.modelinfo import SIDECAR, ModelInfo, allows, model_info, sidecar_text
from lanewatch import __version__
from lanewatch.site.model import Site
from provisioning.brokerconfig import BrokerConfigError, listening_port, rotate
from provisioning.pki import server_names

INSTALL_SCRIPT = "device_install.sh"
UNIT = "lanewatch-agent.service"
STATE_DIR = "/var/lib/lanewatch"


class BundleError(RuntimeError):
    """What is missing to make the bundle, and what to do."""


@dataclass(frozen=True)
class Bundle:
    folder: Path
    device: str
    broker: str
    model: Optional[ModelInfo]
    wheels: int


def make_bundle(
    site: Site,
    broker_folder: Path,
    device_id: str,
    out: Path,
    *,
    model: Optional[Path] = None,
    model_licence: Optional[str] = None,
    source: Optional[str] = None,
    sign_port: Optional[str] = None,
    broker_host: Optional[str] = None,
    wheelhouse: Optional[Path] = None,
    rotate_secret: bool = False,
) -> Bundle:
    """Write ``out/<device_id>/`` (replacing an older bundle of the same device)."""
    devices = {d.id: d for d in site.devices}
    if device_id not in devices:
        raise BundleError(f"no device {device_id!r} in site {site.site.id!r}; its devices are: {', '.join(devices)}")
    camera = devices[device_id].source == "camera"
    if camera and model is None:
        raise BundleError(f"{device_id} is a camera: give the detector with --model FILE.tflite")
    if model is not None and not model.is_file():
        raise BundleError(f"--model {model}: no such file")
    info = _licence(model, model_licence) if camera and model is not None else None
    port = listening_port(broker_folder)
    if rotate_secret:
        rotate(broker_folder, device_id)
    secrets = _login_files(broker_folder, device_id)
    host = broker_host or _default_host(broker_folder)

    folder = out / device_id
    staging = Path(tempfile.mkdtemp(prefix=f".{device_id}.", dir=_made(out)))
    try:
        for source_file, name, mode in secrets:
            _copy(source_file, staging / name, mode)
        settings: dict[str, object] = {"state_dir": STATE_DIR}
        if source:
            settings["source"] = source
        if model is not None and info is not None:
            (staging / "models").mkdir(mode=0o755)
            _copy(model, staging / "models" / model.name, 0o644)
            (staging / "models" / SIDECAR).write_text(sidecar_text(info.licence, info.description), encoding="utf-8")
            settings["model"] = f"models/{model.name}"
        broker = {"host": host, "port": port, "username": device_id, "password_file": "password",
                  "ca_file": "ca.crt", "cert_file": "device.crt", "key_file": "device.key"}  # fmt: skip
        try:
            config = device_config(site, device_id, broker=broker, **settings)
            if sign_port and config.sign is not None:
                config = config.model_copy(update={"sign": config.sign.model_copy(update={"port": sign_port})})
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        (staging / "device.yaml").write_text(
            f"# LaneWatch device {device_id} of {site.site.id}, from `lanewatch site device-bundle`.\n"
            "# Paths are relative to this file; the installer puts it in /etc/lanewatch.\n"
            + yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        _copy(_unit_template(), staging / UNIT, 0o644)
        _copy(Path(str(resources.files("provisioning") / INSTALL_SCRIPT)), staging / "install", 0o755)
        wheels = _wheels(staging / "wheels", wheelhouse)
        (staging / "README.txt").write_text(_readme(site, device_id, host, port, info, wheels), encoding="utf-8")
        staging.chmod(0o700)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return Bundle(folder, device_id, f"{host}:{port}", info, wheels)


def _licence(model: Path, stated: Optional[str]) -> ModelInfo:
    info = model_info(model)
    if stated:
        return ModelInfo(model.name, stated, allows(stated), "the bundle", info.description)
    if not info.known:
        raise BundleError(
            f"{model.name}: its licence is {info.licence.removeprefix('not stated: ')}. A site must know which "
            "licence it deploys: give --model-licence (e.g. Apache-2.0 for the TensorFlow zoo's SSD models)"
        )
    return info


def _login_files(folder: Path, device: str) -> list[tuple[Path, str, int]]:
    files = [
        (folder / "secrets" / f"{device}.password", "password", 0o600),
        (folder / "tls" / "clients" / f"{device}.key", "device.key", 0o600),
        (folder / "tls" / "clients" / f"{device}.crt", "device.crt", 0o644),
        (folder / "tls" / "ca.crt", "ca.crt", 0o644),
    ]
    missing = [str(path) for path, _name, _mode in files if not path.is_file()]
    if missing:
        raise BrokerConfigError(
            f"{device} has no login in {folder} ({', '.join(missing)} missing): run `lanewatch site broker-config` "
            "again after adding the device to the inventory, and reload the broker"
        )
    return files


def _default_host(folder: Path) -> str:
    """The first name the broker's certificate was issued for (``broker-config --tls-host``)."""
    names = server_names(folder / "tls" / "broker.crt")
    if not names:
        raise BundleError("the broker's certificate names no host: give --broker-host")
    return names[0]


def _unit_template() -> Path:
    return Path(str(resources.files("firmware_config") / "systemd" / UNIT))


def _wheels(target: Path, wheelhouse: Optional[Path]) -> int:
    """LaneWatch's own wheel, and the wheelhouse's wheels (hard links where the disk allows)."""
    target.mkdir(mode=0o755)
    if wheelhouse is not None:
        found = sorted(wheelhouse.glob("*.whl"))
        if not any(wheel.name.startswith("lanewatch-") for wheel in found):
            raise BundleError(f"{wheelhouse} holds no lanewatch wheel: make it with `lanewatch site wheelhouse`")
        for wheel in found:
            try:
                os.link(wheel, target / wheel.name)
            except OSError:
                shutil.copy2(wheel, target / wheel.name)
        return len(found)
    build_own_wheel(target)
    return 1


def build_own_wheel(target: Path) -> Path:
    """Build LaneWatch's wheel from the source tree this package runs from."""
    project = Path(__file__).resolve().parents[1]
    if not (project / "pyproject.toml").is_file():
        raise BundleError("LaneWatch is not installed from its source tree here: give --wheelhouse with its wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(target), str(project)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wheels = sorted(target.glob(f"lanewatch-{__version__}-*.whl"))
    if built.returncode != 0 or not wheels:
        raise BundleError(f"building LaneWatch's wheel failed: {built.stderr.strip()[-400:]}")
    shutil.rmtree(project / "build", ignore_errors=True)
    return wheels[0]


def _copy(source: Path, target: Path, mode: int) -> None:
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle, source.open("rb") as original:
        shutil.copyfileobj(original, handle)
    target.chmod(mode)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _readme(site: Site, device: str, host: str, port: int, info: Optional[ModelInfo], wheels: int) -> str:
    entrance = next(d.entrance for d in site.devices if d.id == device)
    model = f"Model: {info.line()}\n" if info is not None else "Model: none (a serial counter)\n"
    software = (
        f"Software: LaneWatch {__version__} and {wheels - 1} other wheels: installs with no internet.\n"
        if wheels > 1
        else f"Software: LaneWatch {__version__}; its dependencies come from the package index the device "
        "reaches (pip), or make the bundle with --wheelhouse.\n"
    )
    return (
        f"LaneWatch 设备安装包 device bundle: {device}，出入口 entrance {entrance}，"
        f"{site.site.name.zh} {site.site.name.en}\n"
        f"Broker: {host}:{port}, TLS, username {device}\n{model}{software}\n"
        "本目录含设备密码与私钥：勿放共享盘，安装后删除。\n"
        "This folder holds the device's password and key: keep it off shared disks, delete it once installed.\n\n"
        "在设备上（Raspberry Pi OS、Debian 11/12、Ubuntu、JetPack），复制本目录后执行：\n"
        "On the device (Raspberry Pi OS, Debian 11/12, Ubuntu, JetPack), with this folder copied to it:\n"
        f"  sudo ./{device}/install                      # 软件、用户、文件、服务、自检\n"
        "                                                #   software, user, files, unit, self-test\n"
        "  sudo systemctl enable --now lanewatch-agent   # 开始计数并开机自启 counting starts, and after every boot\n\n"
        "查看摄像头画面与计数线 To look at what the camera sees and the counting lines:\n"
        "  sudo -u lanewatch /opt/lanewatch/venv/bin/lanewatch agent calibrate --config /etc/lanewatch/device.yaml "
        "--out /tmp/view.png\n"
        "人工计数对照，测出计数线的计数率 To measure the line's counting rates against your own hand count (i, o, q):\n"
        "  sudo -u lanewatch /opt/lanewatch/venv/bin/lanewatch agent tally --config /etc/lanewatch/device.yaml\n"
        "  打印的 measured: 写入站点清单该设备的计数线下。\n"
        "  Put the measured: it prints under this device's line in the site inventory.\n"
        "更换设备：用同一安装包执行上面两条命令。A replacement device: the same two commands with this same bundle.\n"
    )
