"""A UART people counter as the counting source: through a pseudo-terminal, as from a real port."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edge_agent.serial_counter import SerialCounter
from edge_agent.sign import encode
from harness.servers import Mosquitto
from tests.conftest import REPO, Listener, wait_until
from tests.edge_agent.test_agent import SITE, start_agent, write_config


class FakeCounter:
    """The counter's side of a pty pair: writes $CNT lines as a real counter would."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        self.port = os.ttyname(self._slave)

    def send(self, total_in: int, total_out: int, corrupt: bool = False) -> None:
        line = encode("CNT", str(total_in), str(total_out))
        os.write(self.master, line.replace(b"CNT", b"CNX") if corrupt else line)

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


def test_reports_become_crossings_and_restarts_and_noise_are_handled() -> None:
    fake = FakeCounter()
    counter = SerialCounter(fake.port)
    reports = counter.reports()
    try:
        fake.send(100, 90)  # baseline
        assert next(r for r in reports if r is not None).entered == 0
        fake.send(103, 91)
        report = next(r for r in reports if r is not None)
        assert (report.entered, report.left) == (3, 1)
        fake.send(999, 999, corrupt=True)  # damaged on the line: skipped
        fake.send(2, 0)  # the counter restarted
        report = next(r for r in reports if r is not None)
        assert (report.entered, report.left) == (2, 0)
        assert counter.bad_lines == 1
        assert counter.state == "ok"
    finally:
        counter.close()
        fake.close()


@pytest.fixture
def fake() -> Iterator[FakeCounter]:
    counter = FakeCounter()
    yield counter
    counter.close()


def test_the_agent_publishes_a_counters_windows(
    fresh_mosquitto: Mosquitto, listener: Listener, fake: FakeCounter, tmp_path: Path
) -> None:
    device = "radar-huang-west"
    config = {
        "site": SITE, "device": device, "entrance": "huang-west", "source": f"serial:{fake.port}",
        "lines": [{"name": "mouth", "start": [0.5, 0.0], "end": [0.5, 1.0]}], "window_s": 0.5,
        "heartbeat_s": 0.2, "state_dir": str(tmp_path / "state"), "broker": fresh_mosquitto.section(device),
    }  # fmt: skip
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    agent = start_agent(path)
    try:
        totals = (500, 480)

        def counter_heard() -> bool:  # the baseline, repeated until the agent reports the counter ok
            fake.send(*totals)
            return any(h["camera"] == "ok" for h in listener.heartbeats)

        assert wait_until(counter_heard, seconds=60)
        for step in range(1, 11):  # a person in every 0.1 s, one out every 0.2 s
            time.sleep(0.1)
            fake.send(totals[0] + step, totals[1] + step // 2)

        def delivered() -> bool:  # the counter repeats its totals (at least once a second): windows close
            fake.send(totals[0] + 10, totals[1] + 5)
            windows = listener.windows()
            return (sum(w["in"] for w in windows), sum(w["out"] for w in windows)) == (10, 5)

        assert wait_until(delivered), listener.windows()
        assert {w["model"] for w in listener.windows()} == {"serial-counter"}
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    assert agent.returncode == 0
    assert (REPO / "docs" / "counter-protocol.md").is_file()


def test_a_counter_beside_the_camera_is_published_as_its_own_line(
    fresh_mosquitto: Mosquitto, listener: Listener, fake: FakeCounter, shared_assets: Path, tmp_path: Path
) -> None:
    path = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True)
    config = yaml.safe_load(path.read_text())
    config["counter"] = {"port": fake.port, "line": "gate-radar"}
    path.write_text(yaml.safe_dump(config))
    agent = start_agent(path)
    try:
        assert wait_until(lambda: "online" in listener.availability, seconds=60)
        for total in (10, 10, 11, 12, 12):
            fake.send(total, 0)
            time.sleep(0.3)
        assert wait_until(lambda: {"gate", "gate-radar"} <= {w["line"] for w in listener.windows()})
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    assert agent.returncode == 0
    windows = listener.windows()
    assert sorted(w["seq"] for w in windows) == list(range(len(windows)))  # one sequence for both lines
    radar = [w for w in windows if w["line"] == "gate-radar"]
    assert 1 <= radar[-1]["total_in"] == sum(w["in"] for w in radar) <= 2  # 10 -> 12, baseline permitting
