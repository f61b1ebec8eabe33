"""Run the real aggregator (``lanewatch aggregator run``) as a process, and check what reached InfluxDB."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import yaml

from harness import simulated
from harness.servers import InfluxDB, Mosquitto
from lanewatch import contract as c
from lanewatch.site.model import Site
from tests.conftest import EXAMPLE_SITE, child_pids, connected, wait_until


class AggregatorProcess:
    def __init__(self, folder: Path, server: Mosquitto, influx: InfluxDB, database: str, **settings: Any) -> None:
        self.instance = settings.get("instance", "aggregator-1")
        self.folder = folder / self.instance
        self.folder.mkdir(parents=True, exist_ok=True)
        influxdb = {"url": influx.url, "database": database, "spool_after_s": 1.0, **settings.pop("influxdb", {})}
        self.config = {
            "state_dir": str(self.folder / "state"),
            "broker": server.section("aggregator", keepalive_s=5),
            "influxdb": influxdb,
            "status_s": 0.5,
            **settings,
        }
        self.config_path = self.folder / "aggregator.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = self.folder / "aggregator.log"
        self.process: Optional[subprocess.Popen] = None

    def start(self, site_file: Path = EXAMPLE_SITE) -> AggregatorProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "console", "aggregator", "run", "--site", str(site_file),
                 "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def connected(self, times: int = 1) -> bool:
        return self.log().count("subscription granted") >= times

    def wait_connected(self, times: int = 1) -> None:
        assert wait_until(lambda: self.connected(times), 60), self.log()

    def store_pid(self) -> Optional[int]:
        """The store process beside the intake (its child), while it runs."""
        assert self.process is not None
        for pid in child_pids(self.process.pid):  # not multiprocessing's resource tracker, also a child
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
        return None

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL of the aggregator's own process, as `kill -9 PID` would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def cleanup(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def stored_totals(influx: InfluxDB, database: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(in, out, windows) per (device, line), as InfluxDB holds them."""
    body = influx.query('SELECT sum("in"), sum("out"), count("in") FROM counts GROUP BY device, line', db=database)
    out = {}
    for series in body["results"][0].get("series", []):
        _time, total_in, total_out, windows = series["values"][0]
        out[(series["tags"]["device"], series["tags"]["line"])] = (total_in, total_out, windows)
    return out


def windows_stored(influx: InfluxDB, database: str) -> int:
    try:
        body = influx.query('SELECT count("in") FROM counts', db=database)
    except Exception:  # not created yet, or the database is down
        return 0
    series = body["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def expected_totals(fleet: list[simulated.SimulatedDevice]) -> dict[tuple[str, str], tuple[int, int, int]]:
    return {(d.device, line): (t[0], t[1], d.seq // len(d.lines)) for d in fleet for line, t in d.totals.items()}


def all_stored(influx: InfluxDB, database: str, fleet: list[simulated.SimulatedDevice]) -> bool:
    try:
        return stored_totals(influx, database) == expected_totals(fleet)
    except Exception:  # the database is down or not created yet
        return False


def expected_raw(site: Site, fleet: Iterable[simulated.SimulatedDevice]) -> dict[str, int]:
    """Every zone's net flow (in - out over its boundary), from what the devices counted."""
    net: dict[str, int] = {}
    entrance_of = {d.id: d.entrance for d in site.devices}
    for device in fleet:
        for totals in device.totals.values():
            entrance = entrance_of[device.device]
            net[entrance] = net.get(entrance, 0) + totals[0] - totals[1]
    return {z.id: sum(sign * net.get(e.id, 0) for e, sign in site.boundary_entrances(z.id)) for z in site.zones}


def stored_raw(influx: InfluxDB, database: str) -> dict[str, int]:
    body = influx.query("SELECT raw FROM zones GROUP BY zone ORDER BY time DESC LIMIT 1", db=database)
    return {s["tags"]["zone"]: s["values"][0][1] for s in body["results"][0].get("series", [])}


class Desk:
    """A technicians' and control-room desk: Yijin Lane's retained level and every device fault."""

    def __init__(self, broker: Mosquitto) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.client = connected(
            broker, "control-room", "desk",
            subscribe=["lanewatch/v1/sanfang-qixiang/zones/yijin/level", "lanewatch/v1/sanfang-qixiang/faults/+"],
            on_message=lambda _c, _u, m: self.seen.append((m.topic, m.payload)),
        )  # fmt: skip

    def level(self) -> str:
        states = [c.decode("level", p) for t, p in list(self.seen) if t.endswith("/level")]
        return states[-1].level if states else ""  # type: ignore[attr-defined]

    def faults(self) -> list[c.DeviceFault]:
        return [f for t, p in list(self.seen) if "/faults/" in t for f in [c.decode("fault", p)]]  # type: ignore[misc]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
