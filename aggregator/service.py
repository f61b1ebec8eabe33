"""The aggregator: MQTT intake in this process, validation and storage in a store process beside it.

The intake subscribes (MQTT v5, shared subscription, persistent session, manual acknowledgements)
and passes the raw messages to the store process (``aggregator.store``) in chunks, the typed messages
of ``aggregator.handover``. When the store process reports a chunk stored (in InfluxDB or the spool),
the intake acknowledges its messages to the broker; nothing is acknowledged before. Messages
received on an earlier connection are not acknowledged on a later one: the broker redelivers them
and the store treats them as duplicates.

If either process dies, the other stops too, and whatever was not acknowledged is redelivered to
the next start (or to the other instances of the share group).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any, Optional

import paho.mqtt.client as mqtt

from aggregator import store
from aggregator.config import AggregatorConfig
from aggregator.handover import Chunk, Publish, Ready, Reply, Stored
from lanewatch import contract
from lanewatch.site.model import Site

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86_400  # the broker keeps the aggregator's queue this long while it is down
CHUNK = 500  # messages per hand-over to the store process
#: How long a chunk may wait for more messages after its first: at full rate chunks fill first; a lone
#: window that turns a zone red goes on after this, not after a flush interval.
LINGER_S = 0.005


class Aggregator:
    def __init__(self, site: Site, config: AggregatorConfig) -> None:
        self.site, self.config = site, config
        root = f"$share/{config.share_group}/{contract.TOPIC_ROOT}/{site.site.id}"
        self.filters = [f"{root}/devices/#", f"{root}/headcounts/#"]  # the devices' data and the staff's headcounts
        self.client = config.broker.client(config.instance, manual_ack=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._answers = threading.Lock()  # never held across a paho call: paho answers under its own locks
        self._published: dict[int, str] = {}  # message id -> topic, until the broker answers
        self._early: dict[int, Any] = {}  # message id -> the broker's answer, when it came before the id was noted
        self._lock = threading.Lock()  # the open chunk, the pending chunks, the connection generation
        self._topics: list[str] = []
        self._payloads: list[bytes] = []
        self._live: list[bool] = []
        self._mids: list[int] = []
        self._next_chunk = 0
        self._pending: dict[int, tuple[int, list[int]]] = {}  # chunk id -> (connection, message ids)
        self._generation = 0
        self._stop = threading.Event()
        self._full = threading.Event()  # a chunk's worth is waiting
        self._any = threading.Event()  # a chunk has begun
        self._closing = False
        self._to_store: Optional[Connection] = None
        self.connected = threading.Event()
        self.failed: Optional[str] = None

    # --- life cycle ------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop()`` (or until the store process dies: ``failed`` then says why)."""
        context = multiprocessing.get_context("spawn")  # no threads, locks or sockets inherited
        to_store_r, self._to_store = context.Pipe(duplex=False)
        from_store, replies_w = context.Pipe(duplex=False)
        level = logging.getLogger().getEffectiveLevel()
        worker = context.Process(
            target=store.main, args=(self.site, self.config, to_store_r, replies_w, level), name="store", daemon=True
        )
        worker.start()
        to_store_r.close()
        replies_w.close()
        replies = threading.Thread(target=self._read_replies, args=(from_store,), name="replies", daemon=True)
        ready = threading.Event()
        self._ready = ready
        replies.start()
        while not ready.wait(0.2):
            if self._stop.is_set() or not worker.is_alive():
                self._closing = True
                self._finish(worker, replies)
                return
        broker = self.config.broker
        broker.connect(self.client, session_expiry_s=SESSION_EXPIRY_S, receive_maximum=self.config.in_flight)
        self.client.loop_start()
        try:
            while not self._stop.is_set():
                if self._any.wait(self.config.influxdb.flush_interval_s / 2):
                    self._full.wait(LINGER_S)
                self._send_chunk()
        finally:
            self._closing = True  # from here on, messages stay unacknowledged for the next start
            self._send_chunk()
            self._finish(worker, replies)
            self.client.disconnect()
            self.client.loop_stop()

    def stop(self) -> None:
        self._stop.set()
        self._any.set()
        self._full.set()

    def _finish(self, worker: Any, replies: threading.Thread) -> None:
        """Let the store process write what it has, take its last replies, and wait for it."""
        assert self._to_store is not None
        with contextlib.suppress(OSError):  # already gone
            self._to_store.send(None)
        replies.join(60)
        worker.join(60)
        if worker.is_alive():
            worker.kill()

    # --- paho's thread ---------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("the broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1  # ids of messages taken before this connection are void
            self._mids = []
        client.subscribe([(topic, contract.QOS) for topic in self.filters])
        log.info("connected to %s:%d, subscribed to %s", self.config.broker.host, self.config.broker.port,
                 " and ".join(self.filters))  # fmt: skip
        self.connected.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list, _props: Any) -> None:
        """The broker's answer to the subscription: a refusal (usually the ACL) must not go unnoticed."""
        refused = [reason for reason in reasons if reason.is_failure]
        if refused:
            log.error("the broker refused the subscription to %s (%s): check the aggregator's ACL in the broker "
                      "config", " and ".join(self.filters), refused[0])  # fmt: skip
        else:
            log.info("subscription granted: receiving device messages and headcounts")

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _props: Any) -> None:
        """The broker's answer to a level, notice, fault or status: a refusal must not go unnoticed."""
        with self._answers:
            topic = self._published.pop(mid, None)
            if topic is None:
                self._early[mid] = reason
                return
        self._answered(topic, reason)

    @staticmethod
    def _answered(topic: str, reason: Any) -> None:
        if reason.is_failure:
            log.error("the broker refused the message on %s (%s): check the aggregator's ACL in the broker config",
                      topic, reason)  # fmt: skip

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        """Only collect: paho's thread must never wait (it also answers the broker's keepalive)."""
        if self._closing:
            return
        # A message sent with an expiry (the devices' heartbeats) waited at the broker less than that:
        # live enough to measure the device's clock by.
        live = message.properties is not None and hasattr(message.properties, "MessageExpiryInterval")
        with self._lock:
            self._topics.append(message.topic)
            self._payloads.append(bytes(message.payload))
            self._live.append(live)
            if message.qos:
                self._mids.append(message.mid)
            self._any.set()
            if len(self._topics) >= CHUNK:
                self._full.set()

    # --- the main thread -------------------------------------------------------------------------

    def _send_chunk(self) -> None:
        """Hand what was collected to the store process; blocks while it is behind.

        Meanwhile paho keeps collecting, up to the 65,535 unacknowledged messages the broker may
        send (Receive Maximum): memory stays bounded whatever happens to the database.
        """
        with self._lock:
            self._full.clear()
            self._any.clear()
            if not self._topics:
                return
            chunk = Chunk(self._next_chunk, self._topics, self._payloads, self._live)
            self._pending[self._next_chunk] = (self._generation, self._mids)
            self._next_chunk += 1
            self._topics, self._payloads, self._live, self._mids = [], [], [], []
        assert self._to_store is not None
        with contextlib.suppress(OSError):  # the store process is gone; the replies thread stops everything
            self._to_store.send(chunk)

    # --- the replies thread ----------------------------------------------------------------------

    def _read_replies(self, replies: Connection) -> None:
        while True:
            try:
                reply: Reply = replies.recv()
            except (EOFError, OSError):
                if not self._closing:
                    self.failed = "the store process stopped unexpectedly (see the log above)"
                    log.error(self.failed)
                    self.stop()
                return
            if isinstance(reply, Stored):
                with self._lock:
                    done = [self._pending.pop(chunk) for chunk in reply.chunks]
                    generation = self._generation
                for connection, mids in done:
                    if connection == generation:
                        for mid in mids:
                            self.client.ack(mid, contract.QOS)
            elif isinstance(reply, Publish):
                topic = reply.topic
                info = self.client.publish(topic, reply.payload, qos=contract.QOS, retain=reply.retain)
                with self._answers:  # message ids are 16 bits: both maps stay small
                    early = self._early.pop(info.mid, None)
                    if early is None:
                        self._published[info.mid] = topic
                if early is not None:
                    self._answered(topic, early)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # queued while reconnecting
                    log.warning("could not publish on %s (%s)", topic, mqtt.error_string(info.rc))
            elif isinstance(reply, Ready):
                self._ready.set()
