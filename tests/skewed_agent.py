"""``lanewatch agent run`` with the agent's wall clock off by SECONDS: ``python -m tests.skewed_agent SECONDS ARGS``.

For the device-clock fault tests. The agent reads the wall clock through ``datetime.now`` in
``edge_agent.agent`` (window and heartbeat times); here that clock is shifted, the rest of the process
runs unchanged. libfaketime would shift the whole process, but with Python 3.11 it breaks either
``time.sleep`` or ``threading.Event.wait`` (wolfcw/libfaketime#426, #390).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, tzinfo
from typing import Optional

import edge_agent.agent
from console.cli import main

SKEW = timedelta(seconds=float(sys.argv[1]))


class SkewedClock(datetime):
    @classmethod
    def now(cls, tz: Optional[tzinfo] = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) + SKEW


edge_agent.agent.datetime = SkewedClock  # type: ignore[misc]
main(sys.argv[2:], prog_name="lanewatch")
