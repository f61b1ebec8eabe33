"""The whole site on one machine: broker, database, aggregator, devices and signs, started and stopped together.

- **Broker and database.** Without a configuration, a private Mosquitto and InfluxDB on free
  loopback ports, the broker with the configuration a site gets (``provisioning.brokerconfig``: TLS with
  client certificates, one login per device and person, least-privilege ACLs). With one (an
  aggregator YAML), its broker and InfluxDB are used instead, and every demo client logs in with its
  broker account.
- **Devices.** A few real edge agents (``lanewatch agent run``, one process each) count footage
  through the TFLite pipeline, looped at its own frame rate; each drives its entrance's sign, a
  simulated sign on a pseudo-terminal speaking the sign protocol. Every other device plays real
  traffic (``livetraffic``).
- **Speed.** The traffic may run ``speed`` times faster than real time. The aggregator's time rules are
  scaled with it (flow limits up, dwell and level steps down) so that it judges a minute of traffic as
  it would judge a real minute; early warning, which learns the daily curve in real minutes, is off
  unless the speed is 1. Footage is always counted in real time.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo

import yaml

from aggregator.config import AggregatorConfig
from aggregator.service import Aggregator
from control_room import dashboards
from edge_agent.config import device_config
from edge_agent.sign import SimulatedSign
from harness import realtraffic
from harness.assets import assets_folder
from harness.livetraffic import LiveTraffic, first_busy_minute
from harness.miscount import MODELS, CounterErrors, miscount
from harness.servers import InfluxDB, Mosquitto, ServiceError
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site import Site
from provisioning.brokerconfig import AGGREGATOR, logins_beside

log = logging.getLogger(__name__)

#: Where this checkout finds the shared test assets (real footage and models), unless told otherwise.
SSD_MODEL = Path("models/ssd_mobilenet_v1_coco_quant/detect.tflite")
#: Without a start time, the traffic goes live this many minutes before the first zone turns red
#: (three minutes of the wall clock at 10 x): the newcomer sees a red, its notices and the sign at once.
LEAD_MIN = 30


@dataclass(frozen=True)
class Footage:
    """A device that counts a recording instead of playing traffic; ``line`` in fractions x1,y1,x2,y2."""

    device: str
    video: Path
    line: tuple[float, float, float, float]


def default_footage(assets: Optional[Path] = None) -> list[Footage]:
    """Two entrances of the example site with signs, counting the real clips in the assets (when present).

    Nanhou Street's north gate has two cameras (the other one takes the gate's traffic); Gong Alley's
    east gate is one of two gates of its grid. TUD-Stadtmitte is crossed both ways; in the one-by-one
    clip people walk in, left to right across x = 0.8 W, and leave elsewhere.
    """
    assets = assets_folder(assets)
    clips = [
        Footage("cam-nanhou-north-a", assets / "videos/TUD-Stadtmitte/TUD-Stadtmitte.mp4", (0.5, 0.0, 0.5, 1.0)),
        Footage("cam-gong-east", assets / "videos/one-by-one/one-by-one-person-detection.mp4", (0.8, 0.0, 0.8, 1.0)),
    ]
    return [clip for clip in clips if clip.video.is_file()]


@dataclass
class DemoAgent:
    footage: Footage
    config_path: Path
    log_path: Path
    sign: Optional[SimulatedSign]
    process: Optional[subprocess.Popen] = None


class SiteRunner:
    """Starts everything for ``site`` with its state under ``root``; ``stop()`` stops all it started."""

    def __init__(
        self,
        site: Site,
        root: Path,
        footage: list[Footage],
        model: Optional[Path] = None,
        speed: float = 1.0,
        start: Optional[dtime] = None,
        day: Optional[date] = None,
        remote: Optional[AggregatorConfig] = None,
        traffic: bool = True,
        counters: CounterErrors = MODELS["exact"],
    ) -> None:
        self.site = site
        self.root = root
        self.footage = footage
        self.model = model or assets_folder() / SSD_MODEL
        self.speed, self.start_time, self.remote, self.with_traffic = speed, start, remote, traffic
        self.counters = counters
        self.day = day or datetime.now(ZoneInfo(self.site.site.timezone)).date()
        self.broker: Optional[Mosquitto] = None
        self.database: Optional[InfluxDB] = None
        self.aggregator: Optional[Aggregator] = None
        self.aggregator_config: Optional[AggregatorConfig] = None
        self.aggregator_config_path = root / "aggregator.yaml"
        self.dashboards_dir = root / "dashboards"
        self.reports_dir = root / "reports"
        self.agents: list[DemoAgent] = []
        self.traffic: Optional[LiveTraffic] = None
        self._thread: Optional[threading.Thread] = None

    # --- who logs in how ---------------------------------------------------------------------------

    def broker_for(self, user: str) -> BrokerConfig:
        """The broker settings of ``user`` (a device id, a person id, or the aggregator)."""
        if self.remote is not None:
            return logins_beside(self.remote.broker)(user)
        assert self.broker is not None
        return self.broker.login(user)

    @property
    def broker_url(self) -> str:
        return self.broker_for(AGGREGATOR).where

    # --- starting and stopping ------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_footage()
        if self.remote is not None:  # every device and person logs in as itself
            try:
                logins_beside(self.remote.broker)
            except ValueError as exc:
                raise ServiceError(f"broker: {exc}") from None
        if self.remote is None:
            self.broker = Mosquitto.for_site(self.site, self.root / "mosquitto")
            self.broker.start()
            self.database = InfluxDB(self.root / "influxdb")
            self.database.start()
        self.aggregator_config = self._aggregator_config()
        self.aggregator_config_path.write_text(
            "# The demo's aggregator; also what `lanewatch report --config` reads.\n"
            + yaml.safe_dump(self.aggregator_config.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
        )
        dashboards.write(self.site, self.dashboards_dir)
        influx = self.aggregator_config.influxdb
        dashboards.write_provisioning(self.dashboards_dir / "provisioning", influx.url, influx.database)
        self.aggregator = Aggregator(self.site, self.aggregator_config)
        self._thread = threading.Thread(target=self.aggregator.run, name="aggregator", daemon=True)
        self._thread.start()
        for footage in self.footage:
            self.agents.append(self._start_agent(footage))
        if self.with_traffic:
            self.traffic = self._traffic()
            self.traffic.start()

    def check(self) -> None:
        """ServiceError naming what stopped, if anything the demo started is no longer running."""
        for server in (self.broker, self.database):
            if server is not None and server.process is not None and server.process.poll() is not None:
                raise ServiceError(f"{server.name} stopped unexpectedly; its log ends with:\n{server.log_tail()}")
        if self._thread is not None and not self._thread.is_alive():
            assert self.aggregator is not None
            raise ServiceError(self.aggregator.failed or "the aggregator stopped unexpectedly")
        for agent in self.agents:
            if agent.process is not None and agent.process.poll() is not None:
                tail = "\n".join(agent.log_path.read_text(errors="replace").splitlines()[-15:])
                raise ServiceError(
                    f"the agent of {agent.footage.device} exited with code {agent.process.returncode}; "
                    f"its log ({agent.log_path}) ends with:\n{tail}"
                )

    def stop(self) -> None:
        """Everything the demo started, each by its PID: the aggregator before the devices (a device going
        away makes its zones unknown, and the demo's end is no reason to tell every receiver so), then the
        devices (what their outboxes hold stays on the broker for the aggregator's next start), then the
        servers."""
        if self.aggregator is not None:
            self.aggregator.stop()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=60)
        self.stop_devices()
        for server in (self.database, self.broker):
            if server is not None:
                server.stop()

    def stop_devices(self) -> None:
        """The traffic devices and the agents (each sends what its outbox holds first); the rest runs on."""
        if self.traffic is not None:
            self.traffic.stop()
        for agent in self.agents:
            if agent.process is not None and agent.process.poll() is None:
                agent.process.send_signal(signal.SIGTERM)
        for agent in self.agents:
            if agent.process is not None:
                try:
                    agent.process.wait(timeout=40)  # it drains its outbox first
                except subprocess.TimeoutExpired:
                    agent.process.kill()
                    agent.process.wait()
            if agent.sign is not None:
                agent.sign.close()
                agent.sign = None

    # --- parts ----------------------------------------------------------------------------------------------

    def _check_footage(self) -> None:
        devices = {d.id: d for d in self.site.devices}
        for footage in self.footage:
            if footage.device not in devices:
                raise ServiceError(f"footage for {footage.device}: no such device in site {self.site.site.id}")
            if devices[footage.device].source != "camera":
                raise ServiceError(f"footage for {footage.device}: it counts with a serial counter, not a camera")
            if not footage.video.exists():
                raise ServiceError(f"footage for {footage.device}: no such video {footage.video}")
        if self.footage and not self.model.is_file():
            raise ServiceError(f"no TFLite model at {self.model}: give one with --model")

    def _aggregator_config(self) -> AggregatorConfig:
        base = self.remote.model_dump(mode="json", exclude_defaults=True) if self.remote else {}
        validation = AggregatorConfig().validation
        levels = AggregatorConfig().levels
        given_levels = base.get("levels", {})
        scaled = {
            "state_dir": str(self.root / "aggregator"),
            "validation": {
                **base.get("validation", {}),
                "max_flow_per_m_s": validation.max_flow_per_m_s * max(1.0, self.speed),
                "max_flow_per_s": validation.max_flow_per_s * max(1.0, self.speed),
            },
            "levels": {
                **given_levels,
                "default": {**given_levels.get("default", {}), "dwell_s": levels.default.dwell_s / self.speed},
                "step_s": levels.step_s / self.speed,
                "forecast_min": levels.forecast_min if self.speed == 1 else 0,
            },
        }
        if self.remote is None:
            assert self.database is not None
            scaled["broker"] = self.broker_for(AGGREGATOR).model_dump(mode="json", exclude_none=True)
            scaled["influxdb"] = {"url": self.database.url, "database": self.site.site.id}
        return AggregatorConfig.model_validate({**base, **scaled})

    def _start_agent(self, footage: Footage) -> DemoAgent:
        folder = self.root / "agents" / footage.device
        folder.mkdir(parents=True, exist_ok=True)
        signs = [s for s in self.site.signs if s.device == footage.device]
        sign = SimulatedSign() if signs else None
        config = device_config(
            self.site, footage.device, source=str(footage.video.resolve()), model=str(self.model.resolve()),
            state_dir=str(folder / "state"), realtime=True, loop=True, threads=1, heartbeat_s=10.0,
            broker=self.broker_for(footage.device).model_dump(mode="json", exclude_none=True),
        )  # fmt: skip
        x1, y1, x2, y2 = footage.line
        document = config.model_dump(mode="json", exclude_none=True)
        document["lines"] = [{"name": config.lines[0].name, "start": [x1, y1], "end": [x2, y2]}]
        if sign is not None:
            document["sign"]["port"] = sign.port
        path = folder / "device.yaml"
        path.write_text(f"# {footage.device} in the demo: {footage.video.name}, looped\n" + yaml.safe_dump(document))
        agent = DemoAgent(footage, path, folder / "agent.log", sign)
        with agent.log_path.open("ab") as out:
            agent.process = subprocess.Popen(
                [sys.executable, "-m", "console", "agent", "run", "--config", str(path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        log.info("started the agent of %s (pid %d) on %s", footage.device, agent.process.pid, footage.video.name)
        return agent

    def _traffic(self) -> LiveTraffic:
        without = frozenset(f.device for f in self.footage)
        days = realtraffic.week(self.site, days=2, end=self.day + timedelta(days=2), without=without)
        if self.start_time is not None:
            start = self.start_time.hour * 60 + self.start_time.minute
        else:
            red = first_busy_minute(self.site, days, share=1.0)
            yellow = first_busy_minute(self.site, days, share=0.8)
            start = max(0, next((m for m in (red, yellow) if m is not None), 12 * 60) - LEAD_MIN)
        playing = [d.id for d in self.site.devices if d.id not in without]
        counted, _given = miscount(self.site, days, self.counters)  # the first busy minute is the truth's
        return LiveTraffic(self.site, counted, playing, self.broker_for, start, self.speed)
