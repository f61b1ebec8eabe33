"""``lanewatch alerts forward``: every diversion notice, to the phones of the people it is for.

A service of its own rather than a role of the aggregator: a slow or failing phone gateway must never
hold up the aggregator's storing and levels; it needs the internet (or a gateway in a DMZ) where the
aggregator needs none; and it logs in with a login of its own that may only read notices and say whom
they reach.

- **Nothing lost.** The broker keeps the forwarder's session (QoS 1, a day): notices sent while it is
  down wait there. Each notice is acknowledged to the broker only once its deliveries are written to the
  forwarder's SQLite store (fsynced), so a crash or ``kill -9`` loses none.
- **Nothing doubled.** A delivery is keyed by notice, channel and number: a notice the broker delivers
  twice, or again after a restart, adds nothing; a delivered one is never sent again. A group robot gets
  one message per notice, mentioning everyone of its group the notice is for.
- **Retries.** Each channel has a worker of its own (a dead gateway holds up no other): a failed send is
  tried again after 2, 4, 8 ... up to 60 s, or after the ``Retry-After`` a 429 asks for; a notice older
  than ``give_up_after_s`` is no longer sent (and recorded as such).
- **Who cannot be reached.** Per person, retained on ``people/<person>/reach``: ``unreachable`` once a
  notice for them waited ``unreachable_after_s`` on all their channels, with the last error; the control
  room's boards and ``lanewatch alerts deliveries`` show it, and the log says it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Optional

import paho.mqtt.client as mqtt
import requests
from pydantic import BaseModel, ConfigDict, Field

from control_room.channels import ChannelConfig, message_text, send
from lanewatch import contract
from lanewatch.ids import Id
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site.model import Site

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 86_400  # the broker keeps notices for a forwarder that is away this long
STATE_REFRESH_S = 60.0  # a person's reach state is published again this often, unchanged


class ForwarderConfig(BaseModel):
    """The forwarder's YAML: its broker login, its store, and the channels (with their secrets' files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: Id = "forwarder"
    broker: BrokerConfig = BrokerConfig()
    state_dir: Path = Field(description="where the delivery records live (forwarder.db)")
    channels: dict[Id, ChannelConfig] = Field(description="by the name people's `notify:` entries use")
    first_retry_s: float = Field(default=2.0, gt=0, le=600)
    max_retry_s: float = Field(default=60.0, gt=0, le=3600)
    give_up_after_s: float = Field(default=3600.0, gt=0, description="a notice older than this is not sent")
    unreachable_after_s: float = Field(default=60.0, gt=0, description="a person is reported unreachable after this")


def check_channels(site: Site, config: ForwarderConfig) -> list[str]:
    """What in the inventory's ``notify:`` entries the configuration cannot serve, one line each."""
    problems = []
    for person in site.people:
        for reach in person.notify:
            channel = config.channels.get(reach.channel)
            if channel is None:
                problems.append(f"{person.id}: channel {reach.channel!r} is not in the forwarder's channels "
                                f"({', '.join(config.channels) or 'none'})")  # fmt: skip
            elif not channel.group and not reach.to:
                problems.append(f"{person.id}: channel {reach.channel!r} sends SMS: give their number as `to:`")
    return problems


@dataclass(frozen=True)
class Delivery:
    notice: str
    channel: str
    address: str
    people: list[str]
    numbers: list[str]
    payload: bytes
    created: float
    attempts: int


@dataclass(frozen=True)
class Waiting:
    """A person's notices not delivered yet: the oldest (when, which), the last error, all of them."""

    oldest: float
    notice: str
    error: str
    notices: set[str]


class DeliveryStore:
    """Deliveries and per-person receipts, in SQLite: what was sent, to whom, when, and what failed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(
                """
                CREATE TABLE IF NOT EXISTS deliveries (
                    notice TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
                    people TEXT NOT NULL, numbers TEXT NOT NULL, payload BLOB NOT NULL,
                    created REAL NOT NULL, next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                    state TEXT NOT NULL DEFAULT 'pending', error TEXT NOT NULL DEFAULT '', done_at REAL,
                    PRIMARY KEY (notice, channel, address));
                CREATE INDEX IF NOT EXISTS due ON deliveries (channel, state, next_at);
                CREATE TABLE IF NOT EXISTS receipts (
                    notice TEXT NOT NULL, person TEXT NOT NULL, channel TEXT NOT NULL, delivered_at REAL NOT NULL,
                    PRIMARY KEY (notice, person, channel));
                """
            )

    def add(self, notice: contract.DiversionNotice, site: Site, channels: dict[str, ChannelConfig]) -> int:
        """The notice's deliveries (new ones only); how many were added."""
        groups: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        for person_id in notice.to:
            person = next((p for p in site.people if p.id == person_id), None)
            reaches = person.notify if person is not None else []
            mobile = next((reach.to for reach in reaches if reach.to), None)  # a group robot mentions them by it
            for reach in reaches:
                channel = channels.get(reach.channel)
                if channel is None:
                    continue
                address = "" if channel.group else (reach.to or "")
                people, numbers = groups.setdefault((reach.channel, address), ([], []))
                people.append(person_id)
                number = reach.to or (mobile if channel.group else None)
                if number and number not in numbers:
                    numbers.append(number)
        now = time.time()
        payload = contract.encode(notice)
        with self.lock:
            before = self.db.total_changes
            self.db.execute("BEGIN")
            for (name, address), (people, numbers) in groups.items():
                self.db.execute(
                    "INSERT OR IGNORE INTO deliveries (notice, channel, address, people, numbers, payload, created, "
                    "next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (notice.id, name, address, json.dumps(people), json.dumps(numbers), payload, now, now),
                )
            self.db.execute("COMMIT")
            return self.db.total_changes - before

    def due(self, channel: str, now: float, limit: int = 10) -> list[Delivery]:
        with self.lock:
            rows = self.db.execute(
                "SELECT notice, channel, address, people, numbers, payload, created, attempts FROM deliveries "
                "WHERE channel = ? AND state = 'pending' AND next_at <= ? ORDER BY created LIMIT ?",
                (channel, now, limit),
            ).fetchall()
        return [Delivery(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5], r[6], r[7]) for r in rows]

    def next_due(self, channel: str) -> Optional[float]:
        with self.lock:
            row = self.db.execute(
                "SELECT MIN(next_at) FROM deliveries WHERE channel = ? AND state = 'pending'", (channel,)
            ).fetchone()
        return row[0]

    def delivered(self, delivery: Delivery, now: float) -> None:
        key = (delivery.notice, delivery.channel, delivery.address)
        with self.lock:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, error = '', "
                            "done_at = ? WHERE notice = ? AND channel = ? AND address = ?", (now, *key))  # fmt: skip
            self.db.executemany(
                "INSERT OR IGNORE INTO receipts (notice, person, channel, delivered_at) VALUES (?, ?, ?, ?)",
                [(delivery.notice, person, delivery.channel, now) for person in delivery.people],
            )
            self.db.execute("COMMIT")

    def failed(self, delivery: Delivery, error: str, next_at: float, stale: bool) -> None:
        state = "stale" if stale else "pending"
        with self.lock:
            self.db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, error = ?, next_at = ?, state = ?, "
                "done_at = CASE WHEN ? = 'stale' THEN ? ELSE NULL END "
                "WHERE notice = ? AND channel = ? AND address = ?",
                (error, next_at, state, state, next_at, delivery.notice, delivery.channel, delivery.address),
            )

    def rows(self) -> list[dict[str, Any]]:
        """Every delivery, newest first, with its people and state (``lanewatch alerts deliveries``)."""
        with self.lock:
            found = self.db.execute(
                "SELECT notice, channel, address, people, created, attempts, state, error, done_at FROM deliveries "
                "ORDER BY created DESC, channel, address"
            ).fetchall()
        names = ("notice", "channel", "address", "people", "created", "attempts", "state", "error", "done_at")
        return [{**dict(zip(names, row)), "people": json.loads(row[3])} for row in found]

    def backlog(self) -> tuple[int, list[str]]:
        """Deliveries not made yet, and the channels whose last try failed."""
        with self.lock:
            pending = self.db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0]
            failing = [row[0] for row in self.db.execute(
                "SELECT DISTINCT channel FROM deliveries WHERE state = 'pending' AND error != '' ORDER BY channel"
            )]  # fmt: skip
        return pending, failing

    def receipts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.db.execute("SELECT person, COUNT(*) FROM receipts GROUP BY person").fetchall())

    def waiting(self, since: float) -> dict[str, Waiting]:
        """Per person, the notices since ``since`` not yet delivered to them on any channel."""
        with self.lock:
            rows = self.db.execute(
                "SELECT notice, people, created, error FROM deliveries WHERE created >= ? ORDER BY created", (since,)
            ).fetchall()
            # a receipt comes after its delivery was created: only the window's, not the whole history
            reached = set(self.db.execute("SELECT notice, person FROM receipts WHERE delivered_at >= ?",
                                          (since,)).fetchall())  # fmt: skip
        found: dict[str, Waiting] = {}
        for notice, people, created, error in rows:
            for person in json.loads(people):
                if (notice, person) in reached:
                    continue
                known = found.get(person)
                if known is None:
                    found[person] = Waiting(created, notice, error, {notice})
                else:
                    known.notices.add(notice)
                    found[person] = Waiting(known.oldest, known.notice, error or known.error, known.notices)
        return found

    def close(self) -> None:
        with self.lock:
            self.db.close()


class Forwarder:
    """The service: notices in from the broker, deliveries out on every channel, reach states back."""

    def __init__(self, site: Site, config: ForwarderConfig) -> None:
        self.site, self.config = site, config
        self.store = DeliveryStore(config.state_dir / "forwarder.db")
        self.stop_event = threading.Event()
        self._wake = {name: threading.Event() for name in config.channels}
        self._reach: dict[str, tuple[str, float, float]] = {}  # person: (state, since, published at)
        status = contract.KINDS["forwarder"].template.format(site=site.site.id, instance=config.instance)
        offline = contract.ForwarderStatus(site=site.site.id, instance=config.instance, state="offline")
        self.client = config.broker.client(config.instance, persistent=True, manual_ack=True,
                                           will=(status, contract.encode(offline), True))  # fmt: skip
        self._status_at = 0.0
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.reached = threading.Event()  # the broker granted the subscription (tests, the log)

    def run(self) -> None:
        """Until ``stop()``: the broker's session, one worker per channel, and the reach states."""
        self.config.broker.connect(self.client, session_expiry_s=SESSION_EXPIRY_S)
        self.client.loop_start()
        workers = [threading.Thread(target=self._deliver, args=(name,), name=f"channel-{name}", daemon=True)
                   for name in self.config.channels]  # fmt: skip
        for worker in workers:
            worker.start()
        try:
            while not self.stop_event.wait(1.0):
                self._publish_reach()
                if time.monotonic() - self._status_at >= STATE_REFRESH_S:
                    self._publish_status()
        finally:
            for event in self._wake.values():
                event.set()
            for worker in workers:
                worker.join(timeout=self.config.channels[worker.name[len("channel-") :]].timeout_s + 1)
            offline = contract.ForwarderStatus(site=self.site.site.id, instance=self.config.instance, state="offline",
                                               time=_utc(time.time()))  # fmt: skip
            if self.client.is_connected():
                self.client.publish(contract.topic_for(offline), contract.encode(offline), qos=contract.QOS,
                                    retain=True).wait_for_publish(5)  # fmt: skip
            self.client.disconnect()
            self.client.loop_stop()
            self.store.close()

    def stop(self) -> None:
        self.stop_event.set()

    # --- the broker's side -----------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("the broker refused the forwarder's login: %s", reason)
            return
        topic = contract.subscription("zone_notice", site=self.site.site.id)
        client.subscribe(topic, qos=contract.QOS)
        log.info("forwarding the notices of %s from %s", self.site.site.id, self.config.broker.where)
        self._status_at = 0.0  # say `online` at once (the main loop does, within a second)
        self.reached.set()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            notice = contract.decode("zone_notice", bytes(message.payload))
        except contract.ContractError as exc:
            log.warning("ignored a malformed notice on %s: %s", message.topic, exc)
        else:
            assert isinstance(notice, contract.DiversionNotice)
            added = self.store.add(notice, self.site, dict(self.config.channels))
            if added:
                log.info("notice %s (%s %s): %d deliveries", notice.id[:8], notice.zone, notice.level, added)
                for event in self._wake.values():
                    event.set()
        client.ack(message.mid, message.qos)  # only now: its deliveries are on disk

    # --- the channels' side ----------------------------------------------------------------------------

    def _deliver(self, name: str) -> None:
        channel = self.config.channels[name]
        zone_names = {z.id: z.name.zh for z in self.site.zones}
        session = requests.Session()
        while not self.stop_event.is_set():
            now = time.time()
            for delivery in self.store.due(name, now):
                if self.stop_event.is_set():
                    break
                notice = contract.decode("zone_notice", delivery.payload)
                assert isinstance(notice, contract.DiversionNotice)
                if now - delivery.created > self.config.give_up_after_s:
                    self.store.failed(delivery, f"not sent: older than {self.config.give_up_after_s:g} s", now, True)
                    continue
                text = message_text(notice, zone_names.get(notice.zone, notice.zone))
                outcome = send(channel, notice, text, delivery.people, delivery.numbers, session)
                if outcome.delivered:
                    self.store.delivered(delivery, time.time())
                    log.info("notice %s delivered on %s to %s", notice.id[:8], name, ", ".join(delivery.people))
                    continue
                backoff = min(self.config.first_retry_s * 2**delivery.attempts, self.config.max_retry_s)
                wait = outcome.retry_after_s if outcome.retry_after_s is not None else backoff
                self.store.failed(delivery, outcome.error, time.time() + wait, False)
                log.warning("notice %s not delivered on %s (%s); again in %.0f s", notice.id[:8], name,
                            outcome.error, wait)  # fmt: skip
            upcoming = self.store.next_due(name)
            pause = 5.0 if upcoming is None else min(max(upcoming - time.time(), 0.05), 5.0)
            self._wake[name].wait(pause)
            self._wake[name].clear()
        session.close()

    def _publish_status(self) -> None:
        if not self.client.is_connected():
            return
        pending, failing = self.store.backlog()
        unreachable = sorted(person for person, (state, _since, _at) in self._reach.items() if state == "unreachable")
        status = contract.ForwarderStatus(
            site=self.site.site.id, instance=self.config.instance, state="online", time=_utc(time.time()),
            pending=pending, failing=failing, unreachable=unreachable,
        )  # fmt: skip
        self.client.publish(contract.topic_for(status), contract.encode(status), qos=contract.QOS, retain=True)
        self._status_at = time.monotonic()

    # --- who is reached --------------------------------------------------------------------------------

    def _publish_reach(self) -> None:
        now = time.time()
        waiting = self.store.waiting(now - 2 * self.config.give_up_after_s)
        receipts: Optional[dict[str, int]] = None  # counted over the whole history: only when publishing
        for person in (p for p in self.site.people if p.notify):
            left = waiting.get(person.id)
            late = left is not None and now - left.oldest > self.config.unreachable_after_s
            state: Literal["reached", "unreachable"] = "unreachable" if late else "reached"
            previous = self._reach.get(person.id)
            if previous is not None and previous[0] == state and now - previous[2] < STATE_REFRESH_S:
                continue
            since = previous[1] if previous is not None and previous[0] == state else now
            error = left.error if late and left is not None else ""
            if receipts is None:
                receipts = self.store.receipts()
            if previous is None or previous[0] != state:
                self._status_at = 0.0  # the forwarder's status names who is unreachable: say it now
            if previous is not None and previous[0] != state:
                (log.error if late else log.info)("%s (%s) is %s%s", person.name, person.id, state,
                                                  f": {error}" if error else "")  # fmt: skip
            message = contract.ReachState(
                site=self.site.site.id, person=person.id, time=_utc(now), state=state, since=_utc(since),
                pending=len(left.notices) if left else 0, delivered=receipts.get(person.id, 0),
                last_notice=left.notice if left else None, error=error[:500],
            )  # fmt: skip
            self.client.publish(contract.topic_for(message), contract.encode(message), qos=contract.QOS, retain=True)
            self._reach[person.id] = (state, since, now)


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, timezone.utc)
