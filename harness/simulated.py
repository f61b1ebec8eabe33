"""Device traffic for tests, benchmarks and replays: what real devices publish, generated.

Each simulated device behaves like ``edge_agent``: a boot id, a sequence number across its lines,
cumulative totals, a window every ``window_s`` and a heartbeat every few windows. ``Publisher`` sends
such messages at QoS 1, each device logged in as itself, and returns only when the broker took every one.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from lanewatch import contract
from lanewatch.mqttconfig import BrokerConfig
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

    def record(
        self, line: str, end: datetime, window_s: float, in_: int, out: int, in_view: Optional[int] = None
    ) -> contract.CountWindow:
        """The window that reports these crossings, with the line's totals and the next sequence number
        (and ``in_view`` people in view, a random handful when not given)."""
        total = self.totals.setdefault(line, [0, 0])
        total[0] += in_
        total[1] += out
        message = contract.CountWindow(
            site=self.site, device=self.device, line=line, boot_id=self.boot_id, seq=self.seq,
            window_start=end - timedelta(seconds=window_s), window_end=end, in_=in_, out=out,
            total_in=total[0], total_out=total[1],
            in_view=self.rng.randint(0, 20) if in_view is None else in_view,
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


class PublishRefusedError(RuntimeError):
    """The broker did not take a message (an MQTT 5 reason code of 0x80 or more, or no acknowledgement)."""


#: Who logs in to publish a message, from its topic: a device's own login for its topics, else the aggregator.
def sender_of(topic: str) -> str:
    parts = topic.split("/")
    if len(parts) > 5 and parts[3] == "headcounts":
        return parts[5]  # the person who counted
    return parts[4] if len(parts) > 4 and parts[3] == "devices" else "aggregator"


class Publisher:
    """QoS 1 publishing that waits for every acknowledgement and checks it, as the site's devices publish:
    one MQTT client per sender, logged in as that device (``login(user)`` gives its broker settings), so
    the broker's ACLs and identity rules apply as they do in the field.

    paho refuses a publish past 65,535 unacknowledged messages, so the number in flight is kept well
    below that and every return code is checked. paho waits on its sockets with select(), which takes
    no more than 1,024 descriptors: at most ``max_clients`` are connected at once, the one used least
    recently leaving (once the broker took all it sent) when another is needed. Messages grouped by
    sender make that rare.
    """

    def __init__(self, login: Callable[[str], BrokerConfig], max_in_flight: int = 2000, max_clients: int = 200) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.login = login
        self.max_in_flight = max_in_flight
        self.max_clients = max_clients
        self.clients: dict[str, Any] = {}  # least recently used first
        self._answers: dict[str, dict[int, Any]] = {}  # sender -> message id -> the broker's reason code

    def client(self, user: str) -> Any:
        """The connected client of ``user`` (made on first use)."""
        if user in self.clients:
            self.clients[user] = self.clients.pop(user)
            return self.clients[user]
        broker = self.login(user)
        client = broker.client(user)
        client.max_inflight_messages_set(self.max_in_flight)
        answers: dict[int, Any] = {}
        client.on_publish = lambda _c, _u, mid, reason, _p: answers.__setitem__(mid, reason)
        broker.connect(client, wait=True)
        client.loop_start()
        deadline = time.monotonic() + 10
        while not client.is_connected():
            if time.monotonic() > deadline:
                client.loop_stop()
                raise RuntimeError(f"{user} could not connect to the broker at {broker.where}")
            time.sleep(0.01)
        self.clients[user], self._answers[user] = client, answers
        return client

    def send(
        self,
        messages: Iterable[Message],
        timeout: float = 120.0,
        refused: Optional[list[tuple[str, str]]] = None,
        sender: Callable[[str], str] = sender_of,
    ) -> int:
        """Publish every message and wait for all acknowledgements; the number the broker took.

        A message the broker refuses raises PublishRefusedError, unless ``refused`` is given: then
        (topic, reason) is appended there for each.
        """
        pending: dict[str, list[tuple[str, Any]]] = {}
        waiting = taken = 0
        for topic, payload in messages:
            user = sender(topic)
            if user not in self.clients and len(self.clients) >= self.max_clients:
                gone = next(iter(self.clients))
                taken += self._wait(gone, pending.pop(gone, []), timeout, refused)
                self._close(gone)
            info = self.client(user).publish(topic, payload, qos=contract.QOS)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise PublishRefusedError(f"publish refused by paho: {self._mqtt.error_string(info.rc)}")
            pending.setdefault(user, []).append((topic, info))
            waiting += 1
            if waiting >= 20_000:  # far below paho's 65,535 unacknowledged messages
                taken += sum(self._wait(u, sent, timeout, refused) for u, sent in pending.items())
                pending, waiting = {}, 0
        return taken + sum(self._wait(u, sent, timeout, refused) for u, sent in pending.items())

    def _wait(self, user: str, sent: list[tuple[str, Any]], timeout: float, refused: Optional[list]) -> int:
        taken = 0
        for topic, info in sent:
            with contextlib.suppress(RuntimeError):  # the connection dropped: paho says it is not connected
                info.wait_for_publish(timeout)
            reason = self._answers[user].pop(info.mid, None) if info.is_published() else None
            if reason is not None and not reason.is_failure:
                taken += 1
                continue
            why = str(reason) if reason is not None else "no acknowledgement"
            if refused is None:
                raise PublishRefusedError(f"the broker did not take the message on {topic}: {why}")
            refused.append((topic, why))
        return taken

    def _close(self, user: str) -> None:
        client = self.clients.pop(user)
        self._answers.pop(user, None)
        client.disconnect()
        client.loop_stop()

    def close(self) -> None:
        for user in list(self.clients):
            self._close(user)
