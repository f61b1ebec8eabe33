"""The example site's configuration: inventory, aggregator config, systemd units (package data, no code).

A package only so that an installed wheel carries these files: ``lanewatch.EXAMPLE_SITE`` finds them.
"""
