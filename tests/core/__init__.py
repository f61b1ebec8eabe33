"""Tests of the shared core, `lanewatch`."""
