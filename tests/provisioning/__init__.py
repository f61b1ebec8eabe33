"""Tests of `provisioning`."""
