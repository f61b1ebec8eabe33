"""Send the outbox to the broker: MQTT QoS 1, removed from the outbox only on the broker's PUBACK.

paho-mqtt 2.x runs the connection (MQTT v5, automatic reconnect); one sender thread takes messages
from the outbox (backlog and live interleaved, see ``Outbox.schedule``), keeps at most
``max_in_flight`` unacknowledged, and checks every publish's return code (paho refuses a publish past
65,535 in flight, and says so only there). Acknowledgements arrive on paho's thread and are handed to
the sender through a queue, so no lock is ever held across a paho call.

A message whose PUBACK was lost is published again after a reconnect or a restart: receivers
deduplicate on (device, boot id, sequence number), so at-least-once is safe.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.outbox import Outbox
from lanewatch import contract

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive: int = 30
    username: Optional[str] = None
    password: Optional[str] = None
    ca_file: Optional[str] = None  # TLS when set
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    max_in_flight: int = 100
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    protocol: str = "5"  # or "3.1.1" for an older broker
    session_expiry_s: int = 86_400  # the broker keeps this device's notices while it is away


class Publisher:
    """Connects as one device, announces it online (the Last Will says offline) and drains the outbox."""

    def __init__(self, outbox: Outbox, settings: BrokerSettings, site: str, device: str, boot_id: str) -> None:
        self.outbox, self.settings = outbox, settings
        self.availability_topic = contract.topic_for(
            contract.Availability(site=site, device=device, state="online", boot_id=boot_id)
        )
        self._online = contract.encode(contract.Availability(site=site, device=device, state="online", boot_id=boot_id))
        self._offline = contract.encode(
            contract.Availability(site=site, device=device, state="offline", boot_id=boot_id)
        )
        self.v5 = settings.protocol == "5"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=device,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else False,  # 3.1.1: a persistent session
        )
        self.client.will_set(self.availability_topic, self._offline, qos=contract.QOS, retain=True)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.ca_file:
            self.client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
        # Backoff doubles up to the maximum; the random start spreads a whole site's devices apart
        # when the broker comes back, instead of all reconnecting in the same second.
        first = settings.min_backoff * random.uniform(1.0, 2.0)
        self.client.reconnect_delay_set(min_delay=max(1, round(first)), max_delay=int(settings.max_backoff))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.on_connected: Optional[Callable[[], None]] = None  # called on each connection, before the outbox
        self._acks: queue.Queue[int] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._in_flight: dict[int, int] = {}  # paho message id -> outbox id; sender thread only
        self._live_from = 0
        self._subscriptions: list[str] = []
        self._sender = threading.Thread(target=self._send, name="mqtt-sender", daemon=True)

    # --- public -----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.v5:  # a persistent session: subscriptions and queued notices survive a disconnect
            session = mqtt.Properties(mqtt.PacketTypes.CONNECT)
            session.SessionExpiryInterval = self.settings.session_expiry_s
            self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive,
                                      clean_start=False, properties=session)  # fmt: skip
        else:
            self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
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
        if self._connected.is_set():
            self.client.publish(self.availability_topic, self._offline, qos=contract.QOS, retain=True).wait_for_publish(
                timeout
            )
        self.client.disconnect()
        self.client.loop_stop()

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
        log.info("connected to %s:%d", self.settings.host, self.settings.port)
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

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        self._acks.put(mid)
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
            room = self.settings.max_in_flight - len(self._in_flight)
            if room <= 0:
                continue
            for entry in self.outbox.schedule(self._live_from, self._in_flight.values(), limit=room):
                info = self.client.publish(entry.topic, entry.payload, qos=contract.QOS)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    log.warning("publish refused (%s); it stays in the outbox", mqtt.error_string(info.rc))
                    break
                self._in_flight[info.mid] = entry.id
            self._take_acks()

    def _take_acks(self) -> None:
        acked = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._in_flight.pop(mid, None)
            if entry is not None:
                acked.append(entry)
        if acked:
            self.outbox.remove(acked)
