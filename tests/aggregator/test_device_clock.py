"""A device whose clock is far off: the real agent with its wall clock hours ahead or behind
(``tests.skewed_agent``), the real aggregator, which measures the offset from the heartbeats, re-times
the counts and tells the technicians; not one window is lost or doubled, and each lands at the true time."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from aggregator.config import AggregatorConfig
from aggregator.influx import Database, rows
from harness.servers import InfluxDB, Mosquitto
from lanewatch import contract
from tests.aggregators import AggregatorProcess, Desk
from tests.conftest import wait_until

DEVICE = "cam-wenru-west"


@pytest.fixture
def aggregator(fresh_mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> Iterator[AggregatorProcess]:
    # levels and faults start 5 s after the start, without waiting for the site's other devices
    process = AggregatorProcess(tmp_path, fresh_mosquitto, influxdb, "clocktest", instance="agg-clock",
                                levels={"device_timeout_s": 5})  # fmt: skip
    influxdb.query("DROP DATABASE clocktest")
    process.start().wait_connected()
    yield process
    process.cleanup()


@pytest.mark.parametrize("hours", [2, -3])
def test_a_device_clock_far_off_loses_and_doubles_nothing_and_is_reported(
    hours: int,
    fresh_mosquitto: Mosquitto,
    influxdb: InfluxDB,
    aggregator: AggregatorProcess,
    shared_assets: Path,
    tmp_path: Path,
) -> None:
    config = {
        "site": "sanfang-qixiang", "device": DEVICE, "entrance": "wenru-west",
        "source": str(shared_assets / "videos" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"), "loop": True,
        "model": str(shared_assets / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"),
        "lines": [{"name": "gate", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
        "window_s": 1.0, "heartbeat_s": 2.0, "state_dir": str(tmp_path / "state"),
        "broker": fresh_mosquitto.section(DEVICE),
    }  # fmt: skip
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    desk = Desk(fresh_mosquitto)
    db = Database(AggregatorConfig.model_validate({"influxdb": aggregator.config["influxdb"]}).influxdb)

    def stored() -> list[dict]:
        try:
            return [r for s in db.query(f"SELECT * FROM counts WHERE device = '{DEVICE}'") for r in rows(s)]
        except Exception:  # not created yet
            return []

    started = datetime.now(timezone.utc)
    agent = subprocess.Popen([sys.executable, "-m", "tests.skewed_agent", str(hours * 3600), "agent", "run",
                              "--config", str(path)], stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert wait_until(lambda: len(stored()) >= 15, seconds=120), aggregator.log()[-3000:]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=90)
    ended = datetime.now(timezone.utc)
    assert wait_until(lambda: stored() and len(stored()) == max(r["seq"] for r in stored()) + 1, seconds=30)
    windows = sorted(stored(), key=lambda r: r["seq"])
    assert [r["seq"] for r in windows] == list(range(len(windows)))  # none lost, none doubled
    assert sum(r["in"] for r in windows) == windows[-1]["total_in"]
    assert sum(r["out"] for r in windows) == windows[-1]["total_out"]
    # every window at the true time: the offset is measured within about a minute and rounded to 10 s
    margin = timedelta(seconds=75)
    for row in windows:
        when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=row["time"] // 1000)
        assert started - margin <= when <= ended + margin, (hours, when, started)
    assert "rejected" not in aggregator.log()

    # and the technicians were told
    def faults() -> list[contract.DeviceFault]:
        return [f for f in desk.faults() if f.device == DEVICE]

    assert wait_until(lambda: "clock_off" in [f.problem for f in faults()], seconds=10), faults()
    fault = next(f for f in faults() if f.problem == "clock_off")
    assert fault.zones == []  # the device still counts: no zone goes unknown
    assert "NTP" in fault.text.en
    desk.close()
    db.close()
