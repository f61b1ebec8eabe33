"""A device's configuration: one YAML file per device (``lanewatch agent run --config DEVICE.yaml``).

Secrets never live in it: the broker password comes from a file or an environment variable named
here. Counting lines and the region of interest are in fractions of the picture (0..1, y down), so
the file does not depend on the camera's resolution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lanewatch.ids import Id
from lanewatch.site.model import CountingLine as LineSpec
from lanewatch.yamlconfig import load_model

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
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


class OutboxConfig(_Section):
    max_messages: int = Field(default=500_000, ge=1)
    max_age_h: float = Field(default=168.0, gt=0, description="older messages are dropped (and counted)")


class AgentConfig(_Section):
    site: Id
    device: Id
    source: str = Field(description="camera:N, picamera2, rtsp://..., http(s)://..., gst:..., a video file or folder")
    realtime: bool = Field(default=True, description="replay files at their own frame rate")
    model: Path
    model_format: Optional[Literal["ssd", "yolov8", "yolov5"]] = None
    threads: int = Field(default=2, ge=1, le=16)
    anchor: Literal["foot", "center"] = "foot"
    lines: list[LineSpec] = Field(min_length=1)
    roi: Optional[list[tuple[Fraction, Fraction]]] = Field(default=None, min_length=3)
    window_s: float = Field(default=5.0, gt=0, le=3600)
    heartbeat_s: float = Field(default=30.0, gt=0, le=3600)
    state_dir: Path = Field(description="where the outbox and the persisted totals live")
    outbox: OutboxConfig = OutboxConfig()
    broker: BrokerConfig = BrokerConfig()

    @model_validator(mode="after")
    def _distinct_lines(self) -> AgentConfig:
        names = [line.name for line in self.lines]
        if len(set(names)) != len(names):
            raise ValueError(f"counting line names must be distinct, got {names}")
        return self


def load_agent_config(path: Path) -> AgentConfig:
    """Read and check a device's YAML file; ConfigError lists every problem, line by line."""
    return load_model(path, AgentConfig)
