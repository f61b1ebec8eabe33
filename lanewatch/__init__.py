"""LaneWatch: what the edge agent and the aggregator share (the MQTT contract, the site, the CLI)."""

__version__ = "0.1.0"
