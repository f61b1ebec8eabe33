"""Each device's clock against the aggregator's, from its heartbeats; far-off clocks are corrected here.

A device whose clock is wrong (a Pi without a real-time clock that booted before NTP, a dead NTP
server) would stamp its counts hours off: ahead, they would be rejected as from the future; behind,
stored in the past and ignored by the roll-up as older than what it already has. Neither may lose a
count, so the aggregator measures the offset and re-times the device's messages itself, and tells
the technicians (a ``clock_off`` fault) until the device's clock is right again.

How: heartbeats are sent live and expire at the broker after ``contract.HEARTBEAT_EXPIRY_S`` (a stale
one is never delivered), so each gives the bound ``device time - arrival time = offset - delay``
with a delay under a minute. The estimate is the largest of a device's recent probes (the least
delayed), started afresh when a probe says the clock jumped (NTP stepped it). Offsets within
``tolerance_s`` are left alone: such clocks are trusted as they are. The applied offset is rounded to
10 s so that a message redelivered after a restart gets the same time, and is stored again in place.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

PROBES = 5
ROUND_S = 10


class ClockWatch:
    def __init__(self, tolerance_s: float) -> None:
        self.tolerance_s = tolerance_s
        self._probes: dict[str, deque[float]] = {}

    def heard(self, device: str, device_time: datetime, now: datetime) -> None:
        """A heartbeat stamped ``device_time`` by the device arrived at ``now`` (the aggregator's clock)."""
        probe = (device_time - now).total_seconds()
        probes = self._probes.setdefault(device, deque(maxlen=PROBES))
        if probes and abs(probe - max(probes)) > self.tolerance_s:
            probes.clear()  # the device's clock was stepped: the old probes say nothing any more
        probes.append(probe)

    def offset(self, device: str) -> timedelta:
        """How far ahead the device's clock is (negative: behind); zero when within the tolerance or unknown."""
        probes = self._probes.get(device)
        if not probes:
            return timedelta(0)
        estimate = max(probes)
        if abs(estimate) <= self.tolerance_s:
            return timedelta(0)
        return timedelta(seconds=round(estimate / ROUND_S) * ROUND_S)

    def off(self) -> dict[str, timedelta]:
        """Every device whose clock is being corrected, and by how much."""
        return {device: self.offset(device) for device in self._probes if self.offset(device)}
