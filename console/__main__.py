"""``python -m console``: the `lanewatch` command (the demo starts its agents this way, with its own interpreter)."""

from console.cli import main

main()
