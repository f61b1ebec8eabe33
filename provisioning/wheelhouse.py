"""A wheelhouse: every wheel a counting device needs, fetched once on the centre, so that devices install
with no network but the site's (``lanewatch site wheelhouse``, then ``site device-bundle --wheelhouse``).

Wheels rather than Debian packages: the device's Python packages (LiteRT, OpenCV headless, numpy,
pydantic-core) are published as manylinux wheels for aarch64 and x86_64, while Debian 11 and 12 carry
none of LiteRT and older numpy/OpenCV; one folder of wheels serves every Debian, Raspberry Pi OS,
Ubuntu and JetPack release with a glibc at least as new as the one asked for (pip picks the wheels that
fit the device). The OS's own packages (python3-venv, and picamera2 on a Pi) stay with the OS image.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provisioning.bundle import BundleError, build_own_wheel

#: Debian 11 (bullseye) and Ubuntu 20.04 / JetPack 5: the oldest glibc a site's devices run.
OLDEST_GLIBC = (2, 31)
MACHINES = ("aarch64", "x86_64")
DEFAULT_TARGETS = ("aarch64:3.9", "aarch64:3.11", "x86_64:3.9", "x86_64:3.11")
MANIFEST = "wheelhouse.json"


@dataclass(frozen=True)
class Target:
    """A device kind: its machine and its Python."""

    machine: str
    python: str

    @classmethod
    def parse(cls, text: str) -> Target:
        machine, _, python = text.partition(":")
        parts = python.split(".")
        if machine not in MACHINES or len(parts) != 2 or not all(part.isdigit() for part in parts):
            raise ValueError(f"target {text!r}: expected MACHINE:PYTHON with MACHINE one of {', '.join(MACHINES)}, "
                             "e.g. aarch64:3.11 (Raspberry Pi OS 12) or aarch64:3.9 (Debian 11)")  # fmt: skip
        if (int(parts[0]), int(parts[1])) < (3, 9):
            raise ValueError(f"target {text!r}: LaneWatch needs Python 3.9 or newer")
        return cls(machine, python)

    def __str__(self) -> str:
        return f"{self.machine}:{self.python}"

    def platforms(self, glibc: tuple[int, int] = OLDEST_GLIBC) -> list[str]:
        """Every manylinux tag a device of this kind with ``glibc`` accepts (pip does not widen them)."""
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(17, glibc[1] + 1)]
        return [*tags, f"manylinux2014_{self.machine}"]


def build_wheelhouse(
    out: Path, targets: list[Target], *, extra: str = "edge", say: Callable[[str], None] = print
) -> list[Path]:
    """Fetch ``lanewatch[extra]`` and its dependencies for every target into ``out``; returns the wheels."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("lanewatch-*.whl"):
        stale.unlink()  # the wheel of this source tree replaces older ones
    own = build_own_wheel(out)
    for target in targets:
        say(f"wheelhouse: {target}")
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(out),
                   "--python-version", target.python, "--implementation", "cp"]  # fmt: skip
        for platform in target.platforms():
            command += ["--platform", platform]
        done = subprocess.run([*command, f"{own}[{extra}]"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            raise BundleError(f"fetching the wheels for {target} failed: {' '.join(errors)[-600:] or done.stderr}")
    wheels = sorted(out.glob("*.whl"))
    manifest = {"extra": extra, "targets": [str(t) for t in targets], "wheels": [w.name for w in wheels],
                "oldest_glibc": ".".join(map(str, OLDEST_GLIBC))}  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return wheels
