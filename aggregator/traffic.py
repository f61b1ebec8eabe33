"""Device traffic for tests, benchmarks and replays: what real devices publish, generated.

Each simulated device behaves like ``edge_agent``: a boot id, a sequence number across its lines,
cumulative totals, a window every ``window_s`` and a heartbeat every few windows. ``Publisher``
sends such messages at QoS 1 and returns only when the broker acknowledged every one (paho refuses a
publish past 65,535 unacknowledged messages, so the number in flight is kept well below that and
every return code is checked).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Optional

from lanewatch import contract
from lanewatch.site.model import Site

Message = tuple[str, bytes]


@dataclass
class SimulatedDevice:
    site: str
    device: str
    lines: list[str]
    rng: random.Random
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    seq: int = 0
    totals: dict[str, list[int]] = field(default_factory=dict)

    def window(self, line: str, end: datetime, window_s: float, people: int) -> contract.CountWindow:
        """A window with up to ``people`` crossings each way."""
        return self.record(line, end, window_s, self.rng.randint(0, people), self.rng.randint(0, people))

    def record(self, line: str, end: datetime, window_s: float, in_: int, out: int) -> contract.CountWindow:
        """The window that reports these crossings, with the line's totals and the next sequence number."""
        total = self.totals.setdefault(line, [0, 0])
        total[0] += in_
        total[1] += out
        message = contract.CountWindow(
            site=self.site, device=self.device, line=line, boot_id=self.boot_id, seq=self.seq,
            window_start=end - timedelta(seconds=window_s), window_end=end, in_=in_, out=out,
            total_in=total[0], total_out=total[1], in_view=self.rng.randint(0, 20),
            model="ssd_mobilenet_v1_coco_quant", agent_version="sim",
        )  # fmt: skip
        self.seq += 1
        return message

    def heartbeat(self, when: datetime) -> contract.Heartbeat:
        return contract.Heartbeat(
            site=self.site, device=self.device, boot_id=self.boot_id, time=when, uptime_s=3600.0,
            fps=round(self.rng.uniform(8, 15), 1), inference_ms=round(self.rng.uniform(30, 60), 1),
            dropped_frames=0, cpu_temp_c=55.0, load1=1.0, outbox_depth=0, outbox_dropped=0,
            camera="ok", sign="none", clock_synced=True,
        )  # fmt: skip


def devices(site: Site, only: Optional[Iterable[str]] = None, seed: int = 1) -> list[SimulatedDevice]:
    rng = random.Random(seed)
    wanted = set(only) if only is not None else None
    return [
        SimulatedDevice(site.site.id, d.id, [line.name for line in d.lines], random.Random(rng.random()))
        for d in site.devices
        if wanted is None or d.id in wanted
    ]


def stream(
    fleet: list[SimulatedDevice],
    windows: int,
    start: Optional[datetime] = None,
    window_s: float = 5.0,
    heartbeat_every: int = 6,
    people: int = 4,
) -> Iterator[Message]:
    """``windows`` windows per device line, devices interleaved as they would arrive, plus heartbeats."""
    start = start or datetime.now(timezone.utc) - timedelta(seconds=window_s * windows)
    for i in range(windows):
        end = start + timedelta(seconds=window_s * (i + 1))
        for device in fleet:
            for line in device.lines:
                window = device.window(line, end, window_s, people)
                yield contract.topic_for(window), contract.encode(window)
            if heartbeat_every and i % heartbeat_every == 0:
                beat = device.heartbeat(end)
                yield contract.topic_for(beat), contract.encode(beat)


class Publisher:
    """A QoS 1 publisher that waits for every PUBACK (one MQTT client, like a gateway or a replay tool)."""

    def __init__(self, host: str, port: int, client_id: str = "", max_in_flight: int = 2000) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(max_in_flight)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no connection to the broker at {host}:{port}")
            time.sleep(0.01)

    def send(self, messages: Iterable[Message], timeout: float = 120.0) -> int:
        """Publish every message and wait for all acknowledgements; the number sent."""
        pending = []
        sent = 0
        for topic, payload in messages:
            info = self.client.publish(topic, payload, qos=contract.QOS)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish refused: {self._mqtt.error_string(info.rc)}")
            pending.append(info)
            sent += 1
            if len(pending) >= 20_000:  # far below paho's 65,535 unacknowledged messages
                self._wait(pending, timeout)
                pending = []
        self._wait(pending, timeout)
        return sent

    @staticmethod
    def _wait(pending: list, timeout: float) -> None:
        for info in pending:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise RuntimeError("the broker did not acknowledge a message in time")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
