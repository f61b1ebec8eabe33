"""Installed from a wheel, away from the checkout, LaneWatch finds everything it ships.

The wheel is built from this tree (``pip wheel``), installed without dependencies into a fresh venv,
and run from an empty folder; the dependencies come from this test's own environment (its
site-packages as a plain path, so its editable install of the checkout is not seen). The same
with dependencies resolved by pip, per extra: ``scripts/check-install``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_layout import PACKAGES


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the wheel; returns its ``bin``."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # setuptools builds in the tree it is given: a copy, not the checkout
    for package in (*PACKAGES, "firmware_config"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("lanewatch-*.whl")
    venv.create(root / "venv", with_pip=False)
    target = root / "venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    # The dependencies, after the wheel on the path; a path line, so this venv's .pth files are not run.
    (target / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "venv" / "bin"


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "LANEWATCH_ASSETS")}
    command = [str(bin_dir / "python"), "-c", "from console.cli import main; main()", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_the_wheel_carries_the_example_site_and_runs_from_anywhere(installed: Path, tmp_path: Path) -> None:
    where = run(installed, "--version", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    probe = subprocess.run(
        [str(installed / "python"), "-c", "import lanewatch, console; print(lanewatch.EXAMPLE_SITE, console.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    example, module = probe.stdout.split()
    assert not Path(module).is_relative_to(REPO)  # the wheel's copy, not the checkout
    assert not Path(example).is_relative_to(REPO)

    validated = run(installed, "site", "validate", example, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "OK (" in validated.stdout

    built = run(installed, "dashboards", "build", "boards", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    overview = json.loads((tmp_path / "boards" / "overview.json").read_text(encoding="utf-8"))
    assert overview["panels"]

    helped = run(installed, "aggregator", "run", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "--config" in helped.stdout


def test_the_wheel_counts_footage_with_agent_eval(installed: Path, shared_assets: Path, tmp_path: Path) -> None:
    clip = shared_assets / "videos" / "TUD-Campus"
    model = shared_assets / "models" / "yolov8n_coco" / "yolov8n_full_integer_quant.tflite"
    result = run(installed, "agent", "eval", str(clip / "TUD-Campus.mp4"), "--model", str(model),
                 "--line", "320,0,320,480", "--gt", str(clip / "gt" / "gt.txt"), "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    counted = json.loads(result.stdout)
    assert (counted["in"], counted["out"]) == (counted["gt"]["in"], counted["gt"]["out"])


@pytest.mark.parametrize(
    ("extras", "servers"),
    [("edge", False), ("edge-tflite", False), ("alerts", False), ("edge,aggregator,control-room,replay,dev", True)],
)
def test_a_device_set_up_by_the_setup_script_gets_no_broker_and_no_database(extras: str, servers: bool) -> None:
    """A device with Mosquitto and InfluxDB installed would run them at its next boot, open to its network."""

    plan = subprocess.run([str(REPO / "scripts" / "setup"), "--plan"], capture_output=True, text=True, check=True,
                          env={**os.environ, "LANEWATCH_EXTRAS": extras})  # fmt: skip
    packages = set(plan.stdout.split())
    assert "python3-venv" in packages
    assert bool(packages & {"mosquitto", "influxdb", "gcc", "victoria-metrics"}) == servers, packages
