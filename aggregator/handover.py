"""What the intake (``aggregator.service``) and the store process (``aggregator.store``) say to each other.

They run in two processes joined by pipes, so every message here is pickled. A chunk carries its
messages as columns: tens of thousands of messages a second go through, and lists of strings and
bytes pickle about eight times faster than as many objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Chunk:
    """Messages the intake took from the broker, in the order received; acknowledged when ``Stored``."""

    id: int
    topics: list[str]
    payloads: list[bytes]
    live: list[bool]

    def __len__(self) -> int:
        return len(self.topics)

    def messages(self) -> Iterator[tuple[str, bytes, bool]]:
        """(topic, payload, live) of each message; live: sent with an expiry (a heartbeat) and still within it."""
        return zip(self.topics, self.payloads, self.live)


@dataclass(frozen=True)
class Ready:
    """The store process reached the database and restored its state: the intake may subscribe."""


@dataclass(frozen=True)
class Stored:
    """These chunks are durable (in InfluxDB or the spool): the intake acknowledges their messages."""

    chunks: list[int]


@dataclass(frozen=True)
class Publish:
    """A message the aggregator sends (level, notice, fault, status, dead letter), through the intake's client."""

    topic: str
    payload: bytes
    retain: bool


#: What the store process sends back.
Reply = Union[Ready, Stored, Publish]
