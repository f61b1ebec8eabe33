"""Tests of `aggregator`."""
