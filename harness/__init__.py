"""The simulation, replay and benchmark harness: private servers, simulated and real-traffic devices.

Used by the tests, ``bench/``, ``lanewatch aggregator bench`` and the demo; never by a running device
or aggregator.
"""
