"""The one command, as its users meet it: help that explains itself (the demo: tests/console/test_demo.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lanewatch import __version__
from tests.conftest import REPO, run_cli
from tests.test_layout import PACKAGES

GROUPS = {
    "agent": "counting device at a lane entrance",
    "aggregator": "central aggregator",
    "site": "site inventory",
    "alerts": "diversion notices",
    "dashboards": "grafana boards",
    "report": "daily, weekly and monthly reports",
    "demo": "whole site on this machine",
    "contract": "mqtt contract",
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_group_explains_itself(group: str) -> None:
    result = run_cli(group, "--help")
    assert result.exit_code == 0
    assert GROUPS[group] in " ".join(result.output.lower().split())


def test_top_level_help_lists_every_group_and_version() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^  (\w+)  ", result.output, flags=re.MULTILINE)
    assert set(GROUPS) <= set(listed)
    assert run_cli("--version").output.strip() == f"lanewatch, version {__version__}"


def test_edge_side_code_runs_on_python_3_9() -> None:
    """Raspberry Pi OS bullseye ships Python 3.9: no newer syntax or stdlib, annotations included
    (pydantic evaluates them at run time). The device runs the one `lanewatch` command, which loads
    every package's command group: all of them are checked."""
    vermin = Path(sys.executable).with_name("vermin")
    result = subprocess.run(
        [str(vermin), "--target=3.9-", "--violations", "--eval-annotations", "--no-tips", *PACKAGES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_starts_without_the_heavy_libraries() -> None:
    """`lanewatch site validate` must work on a machine with only the base install, and start fast."""
    probe = "import sys, console.cli; print(sorted({'cv2', 'numpy', 'paho', 'pydantic'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("unit", sorted(p.name for p in (REPO / "firmware_config" / "systemd").glob("*.service")))
def test_every_systemd_unit_runs_a_command_and_options_that_exist(unit: str) -> None:
    """A unit naming a command or an option that does not exist would fail at every boot."""
    import configparser
    import shlex

    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.read(REPO / "firmware_config" / "systemd" / unit)
    program, *args = shlex.split(parsed["Service"]["ExecStart"])
    assert program.endswith("/bin/lanewatch")
    options = [arg for arg in args if arg.startswith("--")]
    command = args[: args.index(options[0])]
    result = run_cli(*command, "--help")
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, (unit, option)
