"""``lanewatch agent install BUNDLE``: put a device bundle in place on the device, then self-test it.

What a technician did by hand before, in order, and safe to run again (a replacement device, a new
bundle after a secret was rotated):

- the service user ``lanewatch`` (system user, no login) in the groups that own cameras and serial
  ports (``video``, ``dialout``) where the device has them;
- ``/etc/lanewatch``: the configuration, login and model, readable by root and the service's group
  only, writable by root only (the agent cannot change what it runs with);
- ``/var/lib/lanewatch``: the outbox and totals, the service user's own (kept on reinstall);
- the systemd unit, pointing at the software that runs this command;
- the self-test, run as the service user, as the service will run.

``root`` puts everything under another folder (an image being prepared, or a test); the service user
must then exist already.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from edge_agent.config import load_agent_config
from lanewatch.yamlconfig import ConfigError

USER = "lanewatch"
DEVICE_GROUPS = ("video", "dialout")
UNIT = "lanewatch-agent.service"
#: The unit's command in the packaged template, replaced with this installation's.
TEMPLATE_EXEC = "/opt/lanewatch/venv/bin/lanewatch agent run --config /etc/lanewatch/device.yaml"
SECRETS = ("password", "device.key")
PUBLIC = ("device.crt", "ca.crt")


class InstallError(RuntimeError):
    """The bundle or the device is not as needed; the message says what to do."""


@dataclass(frozen=True)
class Layout:
    """Where an installation puts things, under ``root`` (``/`` on a device)."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc" / "lanewatch"

    @property
    def state(self) -> Path:
        return self.root / "var" / "lib" / "lanewatch"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / UNIT

    @property
    def config(self) -> Path:
        return self.etc / "device.yaml"


def install_bundle(
    bundle: Path, *, venv: Path, root: Path = Path("/"), user: str = USER, say: Callable[[str], None] = print
) -> Layout:
    """Install ``bundle`` (a folder from ``site device-bundle``); returns where things went."""
    layout = Layout(root)
    _check_bundle(bundle)
    if root == Path("/"):
        _ensure_user(user, layout.state, say)
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise InstallError(f"no user {user!r} here: create it, or install under / to have it created") from None
    uid, gid = account.pw_uid, account.pw_gid

    _folder(layout.etc, 0o750, 0, gid)
    _folder(layout.state, 0o750, uid, gid)
    for name in SECRETS:
        _place(bundle / name, layout.etc / name, 0o640, gid)
    for name in PUBLIC:
        _place(bundle / name, layout.etc / name, 0o644, gid)
    if (bundle / "README.txt").is_file():
        _place(bundle / "README.txt", layout.etc / "README.txt", 0o644, gid)
    models = bundle / "models"
    if models.is_dir():
        if (layout.etc / "models").exists():
            shutil.rmtree(layout.etc / "models")  # the bundle's model replaces the old one
        _folder(layout.etc / "models", 0o750, 0, gid)
        for item in sorted(models.iterdir()):
            _place(item, layout.etc / "models" / item.name, 0o644, gid)
    config = yaml.safe_load((bundle / "device.yaml").read_text(encoding="utf-8"))
    config["state_dir"] = str(layout.state)
    header = "".join(line + "\n" for line in (bundle / "device.yaml").read_text().splitlines() if line.startswith("#"))
    _write(layout.config, header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), 0o640, gid)
    load_agent_config(layout.config)  # what was installed loads as the agent will load it

    command = f"{venv}/bin/lanewatch agent run --config {layout.config}"
    unit = (bundle / UNIT).read_text(encoding="utf-8")
    if TEMPLATE_EXEC not in unit:
        raise InstallError(f"{bundle / UNIT} is not LaneWatch's unit (no `ExecStart={TEMPLATE_EXEC}`)")
    unit = unit.replace(TEMPLATE_EXEC, command).replace("User=lanewatch", f"User={user}")
    unit = unit.replace("Group=lanewatch", f"Group={grp.getgrgid(gid).gr_name}")
    layout.unit.parent.mkdir(parents=True, exist_ok=True)
    _write(layout.unit, unit, 0o644, 0)
    if root == Path("/") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=False)
    say(f"installed {config['device']}: {layout.config}, {layout.etc / 'models'}, {layout.state}, {layout.unit}")
    return layout


def selftest(layout: Layout, venv: Path, user: str = USER) -> int:
    """The self-test as the service user (as the service will run); its exit code."""
    command = [str(venv / "bin" / "lanewatch"), "agent", "selftest", "--config", str(layout.config)]
    if os.geteuid() == 0 and user != pwd.getpwuid(os.geteuid()).pw_name:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, check=False, cwd="/").returncode


def _check_bundle(bundle: Path) -> None:
    missing = [name for name in ("device.yaml", UNIT, *SECRETS, *PUBLIC) if not (bundle / name).is_file()]
    if missing:
        raise InstallError(
            f"{bundle} is not a complete device bundle ({', '.join(missing)} missing): "
            "make it again on the centre with `lanewatch site device-bundle`"
        )
    try:
        load_agent_config(bundle / "device.yaml")
    except ConfigError as exc:
        raise InstallError(f"{bundle / 'device.yaml'}: {'; '.join(exc.lines())}") from None
    except OSError as exc:
        raise InstallError(f"{bundle / 'device.yaml'}: {exc.strerror}") from None


def _ensure_user(user: str, home: Path, say: Callable[[str], None]) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        nologin = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
        _run(["useradd", "--system", "--user-group", "--home-dir", str(home), "--no-create-home",
              "--shell", nologin, user])  # fmt: skip
        say(f"created the system user {user}")
    have = [group for group in DEVICE_GROUPS if _group_exists(group)]
    if have:
        _run(["usermod", "--append", "--groups", ",".join(have), user])


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")


def _folder(path: Path, mode: int, uid: int, gid: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _own(path, uid, gid)
    path.chmod(mode)


def _place(source: Path, target: Path, mode: int, gid: int) -> None:
    _write(target, source.read_bytes(), mode, gid)


def _write(target: Path, data: str | bytes, mode: int, gid: int) -> None:
    """Write through a new file with its final mode from the start, then rename over the old one."""
    fresh = target.with_name(f".{target.name}.new")
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    _own(fresh, 0, gid)
    fresh.chmod(mode)
    fresh.replace(target)


def _own(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def python_prefix() -> Path:
    """The virtual environment this command runs from."""
    return Path(sys.prefix)
