"""A beam-break or radar people counter on a UART, as the counting source of a line.

Line protocol (the sign's framing and checksum, see ``docs/counter-protocol.md``)::

    $CNT,<total_in>,<total_out>*<CS>\\r\\n

sent by the counter at least once a second and whenever a count changes; totals are the counter's
own, so a lost line loses nothing. Totals that go down mean the counter restarted: its new totals
are all new crossings. A line with a bad checksum is skipped and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Optional

import serial

from edge_agent.sign import ProtocolError, decode

log = logging.getLogger(__name__)

State = Literal["ok", "reconnecting", "failed"]


@dataclass(frozen=True)
class Report:
    """Crossings since the previous report."""

    time: float  # time.monotonic() on arrival
    entered: int
    left: int


class SerialCounter:
    """Reads a counter's reports; ``state`` is failed after ``silence_s`` without a valid one."""

    def __init__(self, port: str, baudrate: int = 9600, silence_s: float = 5.0) -> None:
        self.port, self.silence_s = port, silence_s
        self.serial = serial.serial_for_url(port, baudrate=baudrate, timeout=0.5)
        self.state: State = "reconnecting"  # until the first valid report
        self.bad_lines = 0
        self._totals: Optional[tuple[int, int]] = None
        self._last_report = time.monotonic()

    def reports(self) -> Iterator[Optional[Report]]:
        """Reports as they arrive; ``None`` about twice a second when nothing valid came in."""
        while True:
            line = self.serial.readline()
            report = self._parse(line) if line else None
            if report is None and time.monotonic() - self._last_report > self.silence_s:
                self.state = "failed"
            yield report

    def _parse(self, line: bytes) -> Optional[Report]:
        try:
            frame = decode(line)
            if frame.command != "CNT" or len(frame.fields) != 2:
                raise ProtocolError(f"expected $CNT,<in>,<out>, got {frame.command}")
            totals = (int(frame.fields[0]), int(frame.fields[1]))
            if min(totals) < 0:
                raise ProtocolError("negative totals")
        except (ProtocolError, ValueError) as exc:
            self.bad_lines += 1
            log.warning("counter on %s: skipped a line (%s)", self.port, exc)
            return None
        previous, self._totals = self._totals, totals
        self.state, self._last_report = "ok", time.monotonic()
        if previous is None:  # the first report only sets the baseline
            return Report(self._last_report, 0, 0)
        if totals[0] < previous[0] or totals[1] < previous[1]:
            log.warning("counter on %s restarted (totals %s after %s)", self.port, totals, previous)
            return Report(self._last_report, *totals)
        return Report(self._last_report, totals[0] - previous[0], totals[1] - previous[1])

    def close(self) -> None:
        self.serial.close()
