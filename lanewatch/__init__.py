"""LaneWatch: what the edge agent and the aggregator share (the MQTT contract, the site, the CLI)."""

from pathlib import Path

__version__ = "0.1.0"

#: The Sanfang Qixiang inventory shipped with the project: the default site of every command.
EXAMPLE_SITE = Path(__file__).resolve().parent.parent / "firmware_config" / "sanfang-qixiang.yaml"
