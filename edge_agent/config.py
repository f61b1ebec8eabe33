"""A device's configuration: one YAML file per device (``lanewatch agent run --config DEVICE.yaml``).

Secrets never live in it: the broker password comes from a file or an environment variable named
here. Counting lines and the region of interest are in fractions of the picture (0..1, y down), so
the file does not depend on the camera's resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lanewatch import contract
from lanewatch.ids import Id
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site.model import CountingLine as LineSpec
from lanewatch.site.model import Site
from lanewatch.yamlconfig import load_model

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutboxConfig(_Section):
    max_messages: int = Field(default=500_000, ge=1)
    max_age_h: float = Field(default=168.0, gt=0, description="older messages are dropped (and counted)")
    max_unstored: int = Field(
        default=10_000,
        ge=1,
        description="messages kept in memory while the disk is full; beyond, the oldest are dropped (and counted)",
    )


class SignConfig(_Section):
    """The sign this device drives over a serial port (see docs/sign-protocol.md)."""

    id: Id
    port: str = Field(description="serial port, e.g. /dev/ttyUSB0, /dev/ttyAMA0, or a pty")
    baudrate: int = 9600
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    retries: int = Field(default=3, ge=0, le=10)
    template_zh: str = Field(default="{text}", description="fields: {text}, {level}, {level_zh}, {zone}")
    template_en: str = Field(default="{text}")


class CounterConfig(_Section):
    """A UART people counter beside the camera, published as a line of its own (a cross-check)."""

    port: str = Field(description="serial port of the counter, e.g. /dev/ttyAMA0")
    baudrate: int = 9600
    line: Id = Field(description="the name its counts are published under, e.g. gate-radar")


class AgentConfig(_Section):
    site: Id
    device: Id
    entrance: Id = Field(description="the entrance this device counts; its notices go to the sign")
    into: Optional[Id] = Field(default=None, description="the zone `in` leads into (named on the calibration picture)")
    source: str = Field(description="camera:N, picamera2, rtsp://..., http(s)://..., gst:..., a video file or folder")
    realtime: bool = Field(default=True, description="replay files at their own frame rate")
    loop: bool = Field(default=False, description="replay files over and over (demonstrations, soak tests)")
    model: Optional[Path] = Field(default=None, description="TFLite model; required unless the source is serial:")
    model_format: Optional[Literal["ssd", "yolov8", "yolov5"]] = None
    threads: int = Field(default=2, ge=1, le=16)
    anchor: Literal["foot", "center"] = "foot"
    lines: list[LineSpec] = Field(min_length=1)
    roi: Optional[list[tuple[Fraction, Fraction]]] = Field(default=None, min_length=3)
    window_s: float = Field(default=contract.DEFAULT_WINDOW_S, gt=0, le=3600)
    heartbeat_s: float = Field(default=contract.DEFAULT_HEARTBEAT_S, gt=0, le=3600)
    state_dir: Path = Field(description="where the outbox and the persisted totals live")
    outbox: OutboxConfig = OutboxConfig()
    broker: BrokerConfig = BrokerConfig()
    sign: Optional[SignConfig] = None
    counter: Optional[CounterConfig] = None

    @property
    def line_names(self) -> list[str]:
        """Every line the agent keeps totals for: the camera's, then a cross-check counter's."""
        return [line.name for line in self.lines] + ([self.counter.line] if self.counter else [])

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        names = [line.name for line in self.lines]
        if len(set(names)) != len(names):
            raise ValueError(f"counting line names must be distinct, got {names}")
        if self.model is None and not self.source.startswith("serial:"):
            raise ValueError("model is required for a camera or video source (only serial: counters need none)")
        if self.counter is not None:
            if self.source.startswith("serial:"):
                raise ValueError("counter: a cross-check counter goes beside a camera; this source is already one")
            if self.counter.line in names:
                raise ValueError(f"counter.line {self.counter.line!r} is also a camera line; give it its own name")
        return self


def load_agent_config(path: Path) -> AgentConfig:
    """Read and check a device's YAML file; ConfigError lists every problem, line by line.

    Relative paths of files the device is given (model, password, certificates) are taken from the
    file's folder: a device bundle installs them beside its configuration."""
    config = load_model(path, AgentConfig)
    folder = Path(path).parent
    model = config.model if config.model is None or config.model.is_absolute() else folder / config.model
    return config.model_copy(update={"model": model, "broker": config.broker.beside(folder)})


def device_config(site: Site, device_id: str, **settings: object) -> AgentConfig:
    """A device's configuration generated from the site inventory, checked against it.

    The inventory gives the ids, the entrance, the counting lines and the sign; ``settings`` give
    what only the installation knows (source, model path, state folder, broker address ...).
    """
    devices = {d.id: d for d in site.devices}
    if device_id not in devices:
        raise ValueError(f"no device {device_id!r} in site {site.site.id!r}; its devices are: {', '.join(devices)}")
    device = devices[device_id]
    signs = [s for s in site.signs if s.device == device_id]
    camera = device.source == "camera"
    defaults: dict[str, object] = {
        "source": "picamera2" if camera else "serial:/dev/ttyAMA0",  # the Pi's own UART for a counter
        **({"model": "/opt/lanewatch/models/ssd_mobilenet_v1_coco_quant/detect.tflite"} if camera else {}),
        "state_dir": "/var/lib/lanewatch",
    }
    sign = {"id": signs[0].id, "port": "/dev/ttyUSB0"} if signs else None
    entrance = next(e for e in site.entrances if e.id == device.entrance)
    return AgentConfig.model_validate(
        {
            **defaults,
            **settings,
            "site": site.site.id,
            "device": device.id,
            "entrance": device.entrance,
            "into": entrance.zone,
            "lines": [line.model_dump(exclude={"measured"}) for line in device.lines],  # the centre's, not the device's
            **({"sign": sign} if sign else {}),
        }
    )
