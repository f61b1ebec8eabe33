"""LaneWatch's shared core: the MQTT contract, ids, the site inventory, config loading, the MQTT client factory.

Both sides (``edge_agent``, ``aggregator``) and everything above them import this; it imports
nothing else of the project, so that a device carries only what it needs.
"""

from importlib.resources import files
from pathlib import Path

__version__ = "0.1.0"

#: The Sanfang Qixiang inventory shipped with the project (package data of ``firmware_config``, so
#: that it is there in an installed wheel too): the default site of every command.
EXAMPLE_SITE = Path(str(files("firmware_config").joinpath("sanfang-qixiang.yaml")))
#: The example aggregator's configuration beside it (its database is the one the boards read by default).
EXAMPLE_AGGREGATOR = Path(str(files("firmware_config").joinpath("aggregator.yaml")))
