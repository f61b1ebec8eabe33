"""A durable, ordered queue of write batches for while the database is unreachable.

A batch that cannot be written goes here (SQLite in WAL mode, committed with ``synchronous=FULL``)
before its messages are acknowledged to the broker, so an aggregator killed during a database
outage loses nothing. Batches leave in the order they came, and only after the database accepted
them. Batches the database refuses for good (a malformed point, a type conflict) are kept in a
table of their own with the database's answer, for someone to look at; they are never dropped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional


class SpooledBatch(NamedTuple):
    id: int
    lines: list[str]


class Spool:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, created REAL, points INTEGER, lines TEXT)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, created REAL, error TEXT, lines TEXT)"
            )
            (self._points,) = self._db.execute("SELECT COALESCE(SUM(points), 0) FROM batches").fetchone()

    @property
    def points(self) -> int:
        """Points waiting for the database."""
        return int(self._points)

    def put(self, lines: list[str]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO batches (created, points, lines) VALUES (?, ?, ?)",
                (time.time(), len(lines), "\n".join(lines)),
            )
            self._points += len(lines)

    def oldest(self) -> Optional[SpooledBatch]:
        with self._lock:
            row = self._db.execute("SELECT id, lines FROM batches ORDER BY id LIMIT 1").fetchone()
        return SpooledBatch(row[0], row[1].split("\n")) if row else None

    def remove(self, batch: SpooledBatch) -> None:
        with self._lock:
            self._db.execute("DELETE FROM batches WHERE id = ?", (batch.id,))
            self._points -= len(batch.lines)

    def keep_refused(self, lines: list[str], error: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO refused (created, error, lines) VALUES (?, ?, ?)", (time.time(), error, "\n".join(lines))
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
