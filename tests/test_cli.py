"""The one command, as its users meet it: help that explains itself, and a demo that cleans up."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lanewatch import __version__
from tests.conftest import REPO, child_pids, run_cli, wait_until

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
    (pydantic evaluates them at run time)."""
    vermin = Path(sys.executable).with_name("vermin")
    result = subprocess.run(
        [str(vermin), "--target=3.9-", "--violations", "--eval-annotations", "--no-tips", "lanewatch", "edge_agent"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.usefixtures("mosquitto", "influxdb")  # the servers must be installed; the demo starts its own
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_starts_the_local_servers_and_stops_them_on_ctrl_c(tmp_path: Path, stop: signal.Signals) -> None:
    lanewatch = Path(sys.executable).with_name("lanewatch")
    demo = subprocess.Popen(
        [str(lanewatch), "demo", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    assert demo.stdout is not None
    for line in demo.stdout:
        output.append(line)
        if line.startswith("Running.") or demo.poll() is not None:
            break
    text = "".join(output)
    pids = [int(p) for p in re.findall(r"started \w+ pid (\d+)", text)]
    assert len(pids) == 2, text
    assert "MQTT broker   mqtt://127.0.0.1:" in text
    assert "InfluxDB      http://127.0.0.1:" in text
    assert "Aggregator    aggregator-1" in text
    assert wait_until(lambda: child_pids(demo.pid), 30)
    pids += child_pids(demo.pid)  # the aggregator's store process and multiprocessing's helper

    demo.send_signal(stop)
    rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, text + rest
    assert "Stopping." in rest
    for pid in pids:
        assert wait_until(lambda pid=pid: not alive(pid), 10), pid


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_command_starts_without_the_heavy_libraries() -> None:
    """`lanewatch site validate` must work on a machine with only the base install, and start fast."""
    probe = "import sys, lanewatch.cli; print(sorted({'cv2', 'numpy', 'paho', 'pydantic'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
