"""The broker section of every LaneWatch configuration (device, aggregator, receivers), and the one place
where MQTT clients are made from it.

Secrets never live in the YAML: the password comes from a file or an environment variable named here.
A client's id always belongs to its login (``<username>`` or ``<username>:<name>``): the broker that
``lanewatch site broker-config`` generates refuses any other, so that no login can take over another's
session.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

#: Between a login and the rest of a client id; ids (lanewatch.ids) never contain it.
CLIENT_ID_SEPARATOR = ":"


class BrokerConfig(BaseModel):
    """Where the MQTT broker is and how to log in; TLS when ``ca_file`` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT version; 3.1.1 for older brokers")
    username: Optional[str] = None
    password_file: Optional[Path] = Field(default=None, description="file holding the password")
    password_env: Optional[str] = Field(default=None, description="environment variable holding the password")
    ca_file: Optional[Path] = Field(default=None, description="CA certificate: TLS when set")
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None

    def password(self) -> Optional[str]:
        """The password from its file or variable; a clear error when the named one is missing."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"broker.password_file {self.password_file}: {exc.strerror}") from None
        if self.password_env is not None:
            if self.password_env not in os.environ:
                raise ValueError(f"broker.password_env: the environment variable {self.password_env} is not set")
            return os.environ[self.password_env]
        return None

    def beside(self, folder: Path) -> BrokerConfig:
        """These settings with relative file paths taken from ``folder`` (the configuration file's),
        so that a login or device folder can be moved or installed anywhere as a whole."""
        update = {
            name: folder / value
            for name in ("password_file", "ca_file", "cert_file", "key_file")
            if (value := getattr(self, name)) is not None and not Path(value).is_absolute()
        }
        return self.model_copy(update=update)

    @property
    def v5(self) -> bool:
        return self.protocol == "5"

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.ca_file else 'mqtt'}://{self.host}:{self.port}"

    def client_id(self, name: str) -> str:
        """``name`` under this login: the username itself, or ``<username>:<name>``."""
        if not self.username or name == self.username:
            return name
        return f"{self.username}{CLIENT_ID_SEPARATOR}{name}"

    def client(
        self,
        name: str,
        *,
        persistent: bool = False,
        manual_ack: bool = False,
        will: Optional[tuple[str, bytes, bool]] = None,
    ) -> mqtt.Client:
        """A paho client for this login, not yet connected: protocol, client id, credentials, TLS and
        Last Will (``(topic, payload, retain)``, QoS 1) applied. ``persistent``: the broker keeps the
        session while the client is away (MQTT 3.1.1; for MQTT 5 see ``connect``)."""
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id(name),
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else not persistent,
            manual_ack=manual_ack,
        )
        client.on_socket_open = _no_delay
        if will is not None:
            topic, payload, retain = will
            client.will_set(topic, payload, qos=1, retain=retain)
        if self.username:
            client.username_pw_set(self.username, self.password())
        if self.ca_file:
            client.tls_set(
                ca_certs=str(self.ca_file),
                certfile=str(self.cert_file) if self.cert_file else None,
                keyfile=str(self.key_file) if self.key_file else None,
            )
        return client

    def connect(
        self,
        client: mqtt.Client,
        *,
        session_expiry_s: int = 0,
        receive_maximum: Optional[int] = None,
        wait: bool = False,
    ) -> None:
        """Connect ``client`` (made by ``client()``) to this broker, in the background unless ``wait``.

        MQTT 5: a session kept ``session_expiry_s`` after a disconnect (0: a clean session), and at most
        ``receive_maximum`` unacknowledged messages sent to this client at once."""
        import paho.mqtt.client as mqtt

        properties = None
        clean_start: Any = mqtt.MQTT_CLEAN_START_FIRST_ONLY  # clean at the first connect, not at reconnects
        if self.v5:
            properties = mqtt.Properties(mqtt.PacketTypes.CONNECT)
            if session_expiry_s:
                properties.SessionExpiryInterval = session_expiry_s
                clean_start = False
            if receive_maximum is not None:
                properties.ReceiveMaximum = receive_maximum
        connect = client.connect if wait else client.connect_async
        connect(self.host, self.port, keepalive=self.keepalive_s, clean_start=clean_start, properties=properties)


def _no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """Send each packet at once: with Nagle's algorithm a notice published right after another waits
    for the broker's delayed acknowledgement of the first (about 40 ms)."""
    import socket

    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket (a test's socket pair)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
