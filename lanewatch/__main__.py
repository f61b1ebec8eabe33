"""``python -m lanewatch``: the same CLI (the demo starts its agents this way, with its own interpreter)."""

from lanewatch.cli import main

main()
