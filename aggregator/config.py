"""The aggregator's configuration (``lanewatch aggregator run --config AGGREGATOR.yaml``).

Every field has a default that suits one aggregator beside a local Mosquitto and InfluxDB 1.x, so
the file only needs what differs. Secrets (database password or token) come from a file or an
environment variable named here, never from the YAML itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lanewatch.ids import Id
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.yamlconfig import load_model

Role = Literal["store", "rollup"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret(name: str, file: Optional[Path], env: Optional[str]) -> Optional[str]:
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"influxdb.{name}_file {file}: {exc.strerror}") from None
    if env is not None:
        if env not in os.environ:
            raise ValueError(f"influxdb.{name}_env: the environment variable {env} is not set")
        return os.environ[env]
    return None


class InfluxConfig(_Section):
    """InfluxDB 1.x (``api: v1``, the ``/write`` endpoint) or 2.x/3.x (``api: v2``, ``influxdb-client``)."""

    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = Field(default="lanewatch", min_length=1, description="v1: the database (created if missing)")
    username: Optional[str] = None
    password_file: Optional[Path] = None
    password_env: Optional[str] = None
    org: Optional[str] = Field(default=None, description="v2: the organisation")
    bucket: Optional[str] = Field(default=None, description="v2: the bucket")
    token_file: Optional[Path] = None
    token_env: Optional[str] = Field(default=None, description="v2: environment variable holding the API token")
    batch_size: int = Field(default=5000, ge=1, le=50_000, description="points per write")
    flush_interval_s: float = Field(default=0.2, gt=0, le=60, description="longest wait before a partial batch")
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    spool_after_s: float = Field(default=5.0, ge=0, description="retry this long, then keep the batch in the spool")

    @model_validator(mode="after")
    def _complete(self) -> InfluxConfig:
        if self.api == "v2" and not (self.org and self.bucket):
            raise ValueError("api v2 needs org and bucket (and a token from token_file or token_env)")
        return self

    def password(self) -> Optional[str]:
        return _secret("password", self.password_file, self.password_env)

    def token(self) -> Optional[str]:
        return _secret("token", self.token_file, self.token_env)


class ValidationConfig(_Section):
    """What the aggregator rejects beyond the contract itself."""

    max_future_s: float = Field(default=300.0, ge=0, description="device clocks further ahead are rejected")
    max_age_h: float = Field(
        default=192.0, gt=0, description="older windows are rejected (devices keep a 168 h backlog by default)"
    )
    max_flow_per_m_s: float = Field(
        default=5.0,
        gt=0,
        description="people per metre of entrance width per second, both directions together; "
        "crowds flow at under 1.5, so more is a broken counter",
    )
    max_flow_per_s: float = Field(default=50.0, gt=0, description="the same limit for entrances of unknown width")
    clock_tolerance_s: float = Field(
        default=120.0,
        ge=90,
        description="a device clock further off than this (measured from its heartbeats) is corrected here "
        "and reported to the technicians; at least 90 s, as heartbeats may wait at the broker up to a minute",
    )

    @model_validator(mode="after")
    def _tolerance_within_future_limit(self) -> ValidationConfig:
        if self.clock_tolerance_s > self.max_future_s:
            raise ValueError(
                f"clock_tolerance_s ({self.clock_tolerance_s:g}) must not exceed max_future_s ({self.max_future_s:g}):"
                " a clock ahead by less than the tolerance is not corrected, so it must not be rejected either"
            )
        return self


class DriftConfig(_Section):
    """Counting factors learned from the nights (``aggregator.drift``): occupancy that stays true when counters err."""

    enabled: bool = Field(default=True, description="apply the learned factors to occupancy (false: raw sums only)")
    prior: float = Field(
        default=1.0, gt=0,
        description="what a line's factors are believed to be before any night; a line whose rates were measured "
        "at install (``measured`` in the site inventory) starts from one over them instead",
    )  # fmt: skip
    prior_sd: float = Field(default=0.05, gt=0, le=1, description="how sure that belief is (standard deviation)")
    night_sd: float = Field(default=0.01, ge=0, le=1, description="how far a factor may move in one night")
    count_var: float = Field(
        default=0.1, gt=0, description="variance a crossing adds to a zone's closing equation (counting noise)"
    )
    gate: float = Field(
        default=4.0, gt=0, description="a closing equation further off (standard deviations) is not learned"
    )
    bounds: tuple[float, float] = Field(default=(0.5, 2.0), description="lowest and highest factor")
    flag_factor: float = Field(
        default=0.15, gt=0, description="a factor this far from the prior sends the technicians to the counter"
    )
    flag_share: float = Field(
        default=0.7, gt=0, lt=1,
        description="a device counting less than this share of its usual (or more than its inverse) is flagged",
    )  # fmt: skip

    band_rate: float = Field(
        default=0.005, ge=0, le=1,
        description="people an estimate may be off per person crossing, before a night has measured it",
    )  # fmt: skip
    scale_sd: float = Field(
        default=0.1, ge=0, le=1,
        description="how far all counters together may be off in scale (relative standard deviation), which no "
        "night can measure: the band grows by this share of the people a zone gained since its last anchor",
    )  # fmt: skip
    headcount_sd: float = Field(
        default=0.05, gt=0, le=1, description="how far off a staff headcount may be, as a share of the count"
    )
    headcount_age_s: float = Field(
        default=900.0, gt=0, description="a headcount further from the zone's latest data than this is refused"
    )
    views: bool = Field(default=True, description="anchor zones on the people the cameras' views see (in_view)")
    view_share_sd: float = Field(
        default=0.3, gt=0, le=2,
        description="how far a view's real share may be from the inventory's (relative, before the data refines it)",
    )  # fmt: skip
    view_sd: float = Field(
        default=0.1, gt=0, le=2, description="how far a view's share wanders within a day (relative standard deviation)"
    )
    view_trust: float = Field(
        default=0.0, ge=0,
        description="a view also learns its scale from the counts until this many times the zone's capacity "
        "crossed since closing (0: from staff headcounts only)",
    )  # fmt: skip
    band_share: float = Field(
        default=0.1, gt=0, le=1,
        description="a notice says its level rests on an uncertain estimate when the band is this share of capacity",
    )  # fmt: skip

    @model_validator(mode="after")
    def _ordered(self) -> DriftConfig:
        low, high = self.bounds
        if not 0 < low <= self.prior <= high:
            raise ValueError(f"bounds {self.bounds} must be positive and hold the prior {self.prior:g}")
        return self


class LevelRule(_Section):
    """When a zone turns yellow or red, and when it may go back."""

    yellow_at: float = Field(default=0.8, gt=0, description="share of capacity that warns (80 %)")
    red_at: float = Field(default=1.0, gt=0, description="share of capacity that stops entry (100 %)")
    clear_margin: float = Field(default=0.1, ge=0, lt=1, description="a level clears only this far below it")
    dwell_s: float = Field(default=300.0, ge=0, description="seconds below the clear threshold before stepping down")
    density_yellow: Optional[float] = Field(default=0.72, gt=0, description="persons/m² (Fruin walkway level D)")
    density_red: Optional[float] = Field(default=1.08, gt=0, description="persons/m² (Fruin walkway level E)")
    inflow_yellow_per_min: Optional[float] = Field(default=None, gt=0, description="people entering per minute")
    inflow_red_per_min: Optional[float] = Field(default=None, gt=0, description="people entering per minute")
    red_on_band: bool = Field(
        default=True,
        description="a zone yellow by its estimate whose measured uncertainty band reaches red_at is red",
    )

    @model_validator(mode="after")
    def _ordered(self) -> LevelRule:
        if self.yellow_at >= self.red_at:
            raise ValueError(f"yellow_at ({self.yellow_at}) must be below red_at ({self.red_at})")
        return self


class LevelsConfig(_Section):
    default: LevelRule = LevelRule()
    zones: dict[Id, LevelRule] = Field(default_factory=dict, description="rules for particular zones")
    device_timeout_s: float = Field(
        default=90.0, gt=0, description="a device silent this long (3 heartbeats) makes its zones unknown"
    )
    forecast_min: int = Field(
        default=15, ge=0, le=60, description="early warning: minutes ahead a `predicted red` looks; 0 turns it off"
    )
    step_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="in a backlog or a replay, levels are evaluated at least once "
        "per this much of the data's own time (live, they are evaluated with every batch)",
    )


class AggregatorConfig(_Section):
    instance: Id = Field(default="aggregator-1", description="this instance's id; also its MQTT client id")
    share_group: Id = Field(
        default="lanewatch-aggregator", description="instances in one group split the device stream between them"
    )
    roles: list[Role] = Field(
        default=["store", "rollup"],
        min_length=1,
        description="store: write the devices' data; rollup: zone occupancy. Scale out with several "
        "store-only instances in one group and one rollup-only instance in a group of its own",
    )
    state_dir: Path = Field(default=Path("aggregator-state"), description="the spool lives here")
    status_s: float = Field(default=10.0, gt=0, le=3600, description="how often the instance reports its health")
    in_flight: int = Field(
        default=65_535,
        ge=1,
        le=65_535,
        description="messages the broker may send before this instance has stored and acknowledged them "
        "(MQTT v5 Receive Maximum); the most, so that the store process sets the pace",
    )
    broker: BrokerConfig = BrokerConfig()
    influxdb: InfluxConfig = InfluxConfig()
    validation: ValidationConfig = ValidationConfig()
    levels: LevelsConfig = LevelsConfig()
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _distinct_roles(self) -> AggregatorConfig:
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"roles must be distinct, got {self.roles}")
        return self


def load_aggregator_config(path: Optional[Path]) -> AggregatorConfig:
    """The checked config from YAML (ConfigError lists every problem), or the defaults when no file is given."""
    return AggregatorConfig() if path is None else load_model(path, AggregatorConfig)
