"""The broker section of every LaneWatch configuration (device, aggregator, receivers).

Secrets never live in the YAML: the password comes from a file or an environment variable named here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


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

    def apply(self, client: mqtt.Client) -> None:
        """Credentials and TLS (with a client certificate when given) on a paho client."""
        if self.username:
            client.username_pw_set(self.username, self.password())
        if self.ca_file:
            client.tls_set(
                ca_certs=str(self.ca_file),
                certfile=str(self.cert_file) if self.cert_file else None,
                keyfile=str(self.key_file) if self.key_file else None,
            )
