"""Tests of `control_room`."""
