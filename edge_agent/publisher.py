"""Send the outbox to the broker: MQTT QoS 1, removed from the outbox only when the broker took it.

paho-mqtt 2.x runs the connection (MQTT v5 or 3.1.1, automatic reconnect); one sender thread takes
messages from the outbox (backlog and live interleaved, see ``Outbox.schedule``), keeps at most
``max_in_flight`` unacknowledged, and checks every publish's return code (paho refuses a publish past
65,535 in flight, and says so only there). Acknowledgements arrive on paho's thread and are handed to
the sender through a queue, so no lock is ever held across a paho call.

A PUBACK is a delivery only when its MQTT 5 reason code says success: one of 0x80 or more (not
authorised, quota exceeded, payload too large ...) means the broker did not take the message. It stays
in the outbox, the log says why, and it is offered again after a pause that doubles up to a minute.

A message whose PUBACK was lost is published again after a reconnect or a restart: receivers
deduplicate on (device, boot id, sequence number), so at-least-once is safe.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.outbox import Outbox
from lanewatch import contract
from lanewatch.mqttconfig import BrokerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sending:
    """How the device sends: unacknowledged messages at most, reconnect backoff, session kept at the broker."""

    max_in_flight: int = 100
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    session_expiry_s: int = 86_400  # the broker keeps this device's notices while it is away
    refused_pause_s: float = 5.0  # a message the broker refused is offered again after this, doubling to a minute


class Publisher:
    """Connects as one device, announces it online (the Last Will says offline) and drains the outbox."""

    def __init__(
        self, outbox: Outbox, broker: BrokerConfig, site: str, device: str, boot_id: str, sending: Sending = Sending()
    ) -> None:
        self.outbox, self.broker, self.sending = outbox, broker, sending
        self.availability_topic = contract.topic_for(
            contract.Availability(site=site, device=device, state="online", boot_id=boot_id)
        )
        self._online = contract.encode(contract.Availability(site=site, device=device, state="online", boot_id=boot_id))
        self._offline = contract.encode(
            contract.Availability(site=site, device=device, state="offline", boot_id=boot_id)
        )
        self.v5 = broker.v5
        self.client = broker.client(device, persistent=True, will=(self.availability_topic, self._offline, True))
        # Backoff doubles up to the maximum; the random start spreads a whole site's devices apart
        # when the broker comes back, instead of all reconnecting in the same second.
        first = sending.min_backoff * random.uniform(1.0, 2.0)
        self.client.reconnect_delay_set(min_delay=max(1, round(first)), max_delay=int(sending.max_backoff))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.on_connected: Optional[Callable[[], None]] = None  # called on each connection, before the outbox
        self._acks: queue.Queue[tuple[int, Any]] = queue.Queue()  # (message id, reason code)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._in_flight: dict[int, int] = {}  # paho message id -> outbox id; sender thread only
        self._held: dict[int, float] = {}  # outbox id -> monotonic time it may be offered again; sender thread only
        self._pause = sending.refused_pause_s
        self.refused = 0  # messages the broker refused (each time), since start
        self._live_from = 0
        self._subscriptions: list[str] = []
        self._sender = threading.Thread(target=self._send, name="mqtt-sender", daemon=True)

    # --- public -----------------------------------------------------------------------------------------

    def start(self) -> None:
        # A persistent session: subscriptions and queued notices survive a disconnect.
        self.broker.connect(self.client, session_expiry_s=self.sending.session_expiry_s)
        self.client.loop_start()
        self._sender.start()

    def subscribe(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Call ``handler`` with the payload of every message on ``topic`` (re-subscribed on reconnect).

        The handler runs on paho's thread: keep it short, hand long work to another thread.
        """
        self._subscriptions.append(topic)
        self.client.message_callback_add(topic, lambda _c, _u, message: handler(bytes(message.payload)))
        if self._connected.is_set():
            self.client.subscribe(topic, qos=contract.QOS)

    def notify(self) -> None:
        """New messages are in the outbox: send them now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (the broker then discards the Last Will) and stop the threads."""
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout)
        connected = self._connected.is_set()
        if connected:
            self.client.publish(self.availability_topic, self._offline, qos=contract.QOS, retain=True).wait_for_publish(
                timeout
            )
        self.client.disconnect()
        # paho's thread waits out a reconnect delay in steps of a second before it sees the stop: when the
        # broker was never reached there is nothing to wait for, and `systemctl stop` should not wait either
        stopping = threading.Thread(target=self.client.loop_stop, name="mqtt-stop", daemon=True)
        stopping.start()
        stopping.join(timeout if connected else 0.1)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # --- paho's thread --------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("the broker refused the connection: %s", reason)
            return
        log.info("connected to %s:%d", self.broker.host, self.broker.port)
        client.publish(self.availability_topic, self._online, qos=contract.QOS, retain=True)
        for topic in self._subscriptions:
            client.subscribe(topic, qos=contract.QOS)
        if self.on_connected is not None:  # before any queued count goes out
            self.on_connected()
        self._connected.set()
        self._wake.set()

    def publish_live(self, topic: str, payload: bytes) -> None:
        """State worth having only fresh (heartbeats): QoS 1, not from the outbox, and (MQTT v5) expiring at
        the broker after ``contract.HEARTBEAT_EXPIRY_S`` instead of being delivered stale."""
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = contract.HEARTBEAT_EXPIRY_S
        self.client.publish(topic, payload, qos=contract.QOS, properties=properties)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)
        self._connected.clear()

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        self._acks.put((mid, reason))
        self._wake.set()

    # --- the sender thread ------------------------------------------------------------------------------

    def _send(self) -> None:
        was_connected = False
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            self._take_acks()
            if not self._connected.is_set():
                was_connected = False
                continue
            if not was_connected:  # a new connection: what is waiting now is the backlog
                self._live_from = self.outbox.last_id() + 1
                self._in_flight.clear()  # unacknowledged before the drop: send again (receivers dedupe)
                was_connected = True
            room = self.sending.max_in_flight - len(self._in_flight)
            if room <= 0:
                continue
            now = time.monotonic()
            self._held = {entry: until for entry, until in self._held.items() if until > now}
            busy = [*self._in_flight.values(), *self._held]
            for entry in self.outbox.schedule(self._live_from, busy, limit=room):
                info = self.client.publish(entry.topic, entry.payload, qos=contract.QOS)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    log.warning("publish refused (%s); it stays in the outbox", mqtt.error_string(info.rc))
                    break
                self._in_flight[info.mid] = entry.id
            self._take_acks()

    def _take_acks(self) -> None:
        acked, refused = [], []
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._in_flight.pop(mid, None)
            if entry is None:
                continue
            if reason.is_failure:  # MQTT 5: the broker did not take it
                refused.append((entry, reason))
            else:
                acked.append(entry)
                self._pause = self.sending.refused_pause_s
        if acked:
            self.outbox.remove(acked)
        if refused:
            self.refused += len(refused)
            until = time.monotonic() + self._pause
            self._held.update((entry, until) for entry, _reason in refused)
            log.error("the broker refused %d message(s) (%s); they stay in the outbox and are offered again in "
                      "%.0f s", len(refused), refused[0][1], self._pause)  # fmt: skip
            self._pause = min(self._pause * 2, 60.0)
