"""The central aggregator: validates device messages, rolls entrances up into zones and stores them.

It speaks the same ``lanewatch.contract`` as the devices and reads the same site inventory.
"""
