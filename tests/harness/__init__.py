"""Tests of `harness`."""
