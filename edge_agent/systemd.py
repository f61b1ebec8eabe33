"""Tell systemd the agent is ready and alive (``Type=notify``, ``WatchdogSec=``), so that a hung
agent is restarted rather than left showing a stale count.

The sd_notify protocol is one datagram on the socket systemd names in ``NOTIFY_SOCKET``; written
here because the library for it (``systemd-python``) needs libsystemd's headers to build on a Pi.
"""

from __future__ import annotations

import os
import socket
from typing import Optional


def notify(state: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True


def watchdog_period() -> Optional[float]:
    """How often to say ``WATCHDOG=1`` (half of ``WatchdogSec``), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000
