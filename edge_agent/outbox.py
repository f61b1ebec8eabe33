"""The device's durable outbox: a message is on disk before it is published, and leaves only when the
broker has acknowledged it.

SQLite in WAL mode with ``synchronous=FULL``: a committed message survives ``kill -9`` and a power
cut. The counter state that produced a message (cumulative totals, sequence numbers) is saved in the
same transaction, so after a crash the totals and the queue always agree.

Bounds, stated: at most ``max_messages`` waiting and none older than ``max_age_s``; beyond that the
oldest are dropped (live counts matter more than old ones), and every drop is counted in a persisted
counter that the heartbeat reports.

A full disk: what cannot be written is kept in memory instead (``full`` says so, and the heartbeat
tells the technicians) and sent from there, so counting goes on; only a restart or a power cut before
it is sent loses it. At most ``max_unstored`` messages wait in memory; beyond that the oldest are
dropped and counted like the others. Since every count message carries the cumulative totals, a
dropped window loses its own breakdown, not the people in it: the next window delivered carries them.

Sending order: the backlog (what was waiting at connect time) goes out oldest first, interleaved one
for one with live messages, so a reconnect after hours offline never holds live counts behind it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_created ON messages (created);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
DROPPED = "outbox.dropped"
MEMORY_IDS = 1 << 60  # ids of messages kept in memory while the disk is full: after every id on disk


def _is_storage_error(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "full" in text or "disk i/o error" in text


@dataclass(frozen=True)
class Entry:
    id: int
    topic: str
    payload: bytes
    created: float  # Unix time it was stored


class Outbox:
    """A bounded, durable FIFO of (topic, payload) with a small key-value state beside it."""

    def __init__(
        self, path: Path, max_messages: int = 500_000, max_age_s: float = 7 * 86_400, max_unstored: int = 10_000
    ) -> None:
        if max_messages < 1 or max_age_s <= 0 or max_unstored < 1:
            raise ValueError("the outbox needs room for at least one message and a positive maximum age")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages, self.max_age_s, self.max_unstored = max_messages, max_age_s, max_unstored
        self.full = False  # the last write failed for want of disk space
        self._memory: dict[int, Entry] = {}  # what the disk could not take, oldest first
        self._next_memory_id = MEMORY_IDS
        self._lost_in_memory = 0  # dropped from memory, not yet added to the persisted counter
        self._acked_on_full_disk: set[int] = set()  # acknowledged, not yet deleted (the delete failed)
        self._lock = threading.Lock()  # one connection, shared by the counting and sending threads
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def append(self, messages: Iterable[tuple[str, bytes]], state: Optional[Mapping[str, str]] = None) -> list[int]:
        """Store messages, and the state that produced them, in one transaction; return their ids.
        On a full disk they are kept in memory instead (see the module's docstring)."""
        now = time.time()
        messages = list(messages)
        with self._lock:
            try:
                with self._transaction():
                    ids = [
                        int(self._db.execute(
                            "INSERT INTO messages (topic, payload, created) VALUES (?, ?, ?)", (topic, payload, now)
                        ).lastrowid or 0)
                        for topic, payload in messages
                    ]  # fmt: skip
                    if state:
                        self._put_state(state)
                    if self._lost_in_memory:
                        self._count_dropped(self._lost_in_memory)
                    self._enforce_bounds(now)
                self._lost_in_memory = 0
                self.full = False
                return ids
            except sqlite3.OperationalError as exc:
                if not _is_storage_error(exc):
                    raise
                self.full = True
                return self._keep_in_memory(messages, now)

    def _keep_in_memory(self, messages: list[tuple[str, bytes]], now: float) -> list[int]:
        ids = []
        for topic, payload in messages:
            self._memory[self._next_memory_id] = Entry(self._next_memory_id, topic, payload, now)
            ids.append(self._next_memory_id)
            self._next_memory_id += 1
        while len(self._memory) > self.max_unstored:
            del self._memory[next(iter(self._memory))]
            self._lost_in_memory += 1
        return ids

    def pending(self, after: int = 0, limit: int = 100) -> list[Entry]:
        """Messages waiting, oldest first (those on disk, then those in memory), with ids above ``after``."""
        with self._lock:
            skip = len(self._acked_on_full_disk)
            rows = self._db.execute(
                "SELECT id, topic, payload, created FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit + skip),
            ).fetchall()
            stored = [Entry(int(r[0]), str(r[1]), bytes(r[2]), float(r[3])) for r in rows]
            kept = [e for e in self._memory.values() if e.id > after]
        found = [e for e in stored if e.id not in self._acked_on_full_disk] + kept
        return found[:limit]

    def schedule(self, live_from: int, in_flight: Iterable[int] = (), limit: int = 20) -> list[Entry]:
        """What to send next: backlog (ids below ``live_from``) and live messages, alternating.

        Each stream stays in order; messages already sent and not yet acknowledged are skipped.
        """
        busy = set(in_flight)
        backlog = [e for e in self.pending(0, limit + len(busy)) if e.id < live_from and e.id not in busy]
        live = [e for e in self.pending(max(live_from - 1, 0), limit + len(busy)) if e.id not in busy]
        chosen: list[Entry] = []
        while len(chosen) < limit and (backlog or live):
            for stream in (backlog, live):
                if stream and len(chosen) < limit:
                    chosen.append(stream.pop(0))
        return chosen

    def remove(self, ids: Iterable[int]) -> None:
        """Forget acknowledged messages (on a full disk, the delete is retried with the next one)."""
        with self._lock:
            stored = set(self._acked_on_full_disk)
            for i in ids:
                if self._memory.pop(i, None) is None:
                    stored.add(i)
            try:
                with self._transaction():
                    self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in sorted(stored)])
                self._acked_on_full_disk.clear()
            except sqlite3.OperationalError as exc:
                if not _is_storage_error(exc):
                    raise
                self._acked_on_full_disk = stored

    def last_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
        return int(row[0])

    def depth(self) -> int:
        with self._lock:
            stored = int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            return stored - len(self._acked_on_full_disk) + len(self._memory)

    def dropped(self) -> int:
        """Messages dropped by the bounds since the outbox was created (persisted, plus any dropped from
        memory on a full disk and not yet written down)."""
        return int(self.state().get(DROPPED, "0")) + self._lost_in_memory

    def state(self) -> dict[str, str]:
        with self._lock:
            return {str(k): str(v) for k, v in self._db.execute("SELECT key, value FROM state")}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- inside a transaction ------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _put_state(self, state: Mapping[str, str]) -> None:
        self._db.executemany(
            "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            list(state.items()),
        )

    def _enforce_bounds(self, now: float) -> None:
        expired = self._db.execute("DELETE FROM messages WHERE created < ?", (now - self.max_age_s,)).rowcount
        first, last = self._db.execute("SELECT MIN(id), MAX(id) FROM messages").fetchone()
        excess = 0
        if first is not None and last - first + 1 > self.max_messages:  # cheap upper bound first
            count = int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            excess = max(0, count - self.max_messages)
        if excess:
            self._db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)", (excess,)
            )
        if expired or excess:
            self._count_dropped(expired + excess)

    def _count_dropped(self, more: int) -> None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (DROPPED,)).fetchone()
        self._put_state({DROPPED: str(int(row[0] if row else 0) + more)})


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None:
                self.db.execute("COMMIT")
        finally:
            if self.db.in_transaction:  # an error, or a failed COMMIT; SQLite may have rolled back already
                self.db.execute("ROLLBACK")
