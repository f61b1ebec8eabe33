"""The device's durable outbox: a message is on disk before it is published, and leaves only when the
broker has acknowledged it.

SQLite in WAL mode with ``synchronous=FULL``: a committed message survives ``kill -9`` and a power
cut. The counter state that produced a message (cumulative totals, sequence numbers) is saved in the
same transaction, so after a crash the totals and the queue always agree.

Bounds, stated: at most ``max_messages`` waiting and none older than ``max_age_s``; beyond that the
oldest are dropped (live counts matter more than old ones), and every drop is counted in a persisted
counter that the heartbeat reports.

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


@dataclass(frozen=True)
class Entry:
    id: int
    topic: str
    payload: bytes
    created: float  # Unix time it was stored


class Outbox:
    """A bounded, durable FIFO of (topic, payload) with a small key-value state beside it."""

    def __init__(self, path: Path, max_messages: int = 500_000, max_age_s: float = 7 * 86_400) -> None:
        if max_messages < 1 or max_age_s <= 0:
            raise ValueError("the outbox needs room for at least one message and a positive maximum age")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages, self.max_age_s = max_messages, max_age_s
        self._lock = threading.Lock()  # one connection, shared by the counting and sending threads
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def append(self, messages: Iterable[tuple[str, bytes]], state: Optional[Mapping[str, str]] = None) -> list[int]:
        """Store messages, and the state that produced them, in one transaction; return their ids."""
        now = time.time()
        with self._lock, self._transaction():
            ids = [
                int(self._db.execute(
                    "INSERT INTO messages (topic, payload, created) VALUES (?, ?, ?)", (topic, payload, now)
                ).lastrowid or 0)
                for topic, payload in messages
            ]  # fmt: skip
            if state:
                self._put_state(state)
            self._enforce_bounds(now)
        return ids

    def pending(self, after: int = 0, limit: int = 100) -> list[Entry]:
        """Messages waiting, oldest first, with ids above ``after``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, created FROM messages WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()
        return [Entry(int(r[0]), str(r[1]), bytes(r[2]), float(r[3])) for r in rows]

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
        """Forget acknowledged messages."""
        with self._lock, self._transaction():
            self._db.executemany("DELETE FROM messages WHERE id = ?", [(i,) for i in ids])

    def last_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
        return int(row[0])

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def dropped(self) -> int:
        """Messages dropped by the bounds since the outbox was created (persisted)."""
        return int(self.state().get(DROPPED, "0"))

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
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (DROPPED,)).fetchone()
            self._put_state({DROPPED: str(int(row[0] if row else 0) + expired + excess)})


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
