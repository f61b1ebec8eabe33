"""Which devices can be counted on now, and the technicians' fault notices when that changes.

A zone's level is only as good as the counters on its boundary: a device that is silent, offline,
blind, out of disk, off the clock or sending impossible data makes its zones ``unknown`` rather
than quietly wrong, and the technicians get a retained notice when its problem starts, changes or ends.
A device that counts far from the truth (``miscounting``, from the nights' evidence) still counts:
its zones keep their level, corrected, and the technicians are told until a night clears it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime

from aggregator import notices
from lanewatch import contract
from lanewatch.site.model import Site

log = logging.getLogger(__name__)


class DeviceHealth:
    def __init__(self, site: Site, timeout_s: float) -> None:
        self.site = site
        self.timeout_s = timeout_s
        self.devices = [d.id for d in site.devices]
        self.known = frozenset(self.devices)
        self.started = time.monotonic()
        self.last_seen: dict[str, float] = {}  # device -> monotonic time of its last message
        self.offline: set[str] = set()
        self.camera_failed: set[str] = set()
        self.disk_full: set[str] = set()
        self.miscounting: dict[str, str] = {}  # device -> why, from the latest night's learning
        self.rejected_at: dict[str, tuple[float, str]] = {}  # device -> (monotonic time, why) of its latest rejection
        self.faults: dict[str, tuple[str, datetime]] = {}  # device -> (problem, since), as last reported

    def saw(self, body: contract.Message) -> None:
        """A valid message from a device: it is alive, and what it says of itself counts."""
        device = getattr(body, "device", "")
        self.last_seen[device] = time.monotonic()
        if isinstance(body, contract.Availability):
            (self.offline.add if body.state == "offline" else self.offline.discard)(device)
        elif isinstance(body, contract.Heartbeat):
            (self.camera_failed.add if body.camera == "failed" else self.camera_failed.discard)(device)
            (self.disk_full.add if body.storage == "full" else self.disk_full.discard)(device)

    def rejected(self, device: str, why: str) -> None:
        """A message of ``device`` was refused: ``bad_data`` until it has sent none for the timeout."""
        if device in self.known:
            self.rejected_at[device] = (time.monotonic(), why)

    def all_heard(self) -> bool:
        """Every device was heard since the start, or the timeout passed: levels may be judged (no false unknowns)."""
        return len(self.last_seen) >= len(self.devices) or time.monotonic() - self.started > self.timeout_s

    def problems(self, clock_off: Iterable[str]) -> dict[str, str]:
        """Every device that cannot be counted on now, and why (the last one named wins)."""
        now = time.monotonic()
        problems = dict.fromkeys(self.miscounting, "miscounting")
        problems.update(dict.fromkeys(clock_off, "clock_off"))
        problems.update(dict.fromkeys(self.disk_full, "disk_full"))
        problems.update({d: "bad_data" for d, (when, _why) in self.rejected_at.items() if now - when < self.timeout_s})
        problems.update(
            {d: "silent" for d in self.devices if now - self.last_seen.get(d, self.started) > self.timeout_s}
        )
        problems.update(dict.fromkeys(self.camera_failed, "camera_failed"))
        problems.update(dict.fromkeys(self.offline, "offline"))
        return problems

    def fault_changes(self, problems: dict[str, str], when: datetime) -> list[contract.DeviceFault]:
        """A retained notice for the technicians for every device whose problem started, changed or ended."""
        changed = []
        for device in sorted(set(problems) | set(self.faults)):
            problem = problems.get(device, "recovered")
            previous = self.faults.get(device)
            if previous is not None and previous[0] == problem:
                continue
            if previous is None and problem == "recovered":
                continue
            since = when if previous is None or problem == "recovered" else previous[1]
            if problem == "recovered":
                del self.faults[device]
            else:
                self.faults[device] = (problem, since)
            why = ""
            if problem == "bad_data":
                why = self.rejected_at[device][1]
            elif problem == "miscounting":
                why = self.miscounting[device]
            changed.append(notices.fault(self.site, device, problem, since, when, why))
            log.warning("device %s: %s", device, problem)
        return changed
