"""The one MQTT client factory: every client of the project is made and connected the same way."""

from __future__ import annotations

import socket

from harness.servers import Mosquitto
from tests.conftest import close, connected


def test_clients_send_each_packet_at_once(mosquitto: Mosquitto) -> None:
    """A notice published right after another must not wait for the broker's delayed acknowledgement
    of the first (Nagle's algorithm): about 40 ms on every red notice."""
    client = connected(mosquitto, "aggregator", "nodelay")
    try:
        sock = client.socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        close(client)
