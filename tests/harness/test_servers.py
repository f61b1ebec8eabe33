"""The local servers the tests and the demo rely on: real, private, and keeping their data through a crash.

(The broker and its configuration: tests/provisioning/test_broker_security.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.servers import InfluxDB, ServiceError


def test_influxdb_stores_and_answers_influxql(influxdb: InfluxDB) -> None:
    influxdb.query('CREATE DATABASE "harness"')
    influxdb.write(
        "harness", "flow,entrance=yijin-west in=12i,out=3i 1764385200\nflow,entrance=yijin-west in=4i,out=9i 1764385260"
    )
    body = influxdb.query('SELECT sum("in"), sum("out") FROM flow WHERE entrance = \'yijin-west\'', db="harness")
    assert body["results"][0]["series"][0]["values"][0][1:] == [16, 12]


def test_influxdb_keeps_its_data_through_a_kill_and_restart(fresh_influxdb: InfluxDB) -> None:
    fresh_influxdb.query('CREATE DATABASE "crash"')
    fresh_influxdb.write("crash", "flow,entrance=ta-east in=7i 1764385200")
    first_pid = fresh_influxdb.pid
    fresh_influxdb.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(first_pid, 0)  # the process is really gone
    fresh_influxdb.start()
    body = fresh_influxdb.query('SELECT "in" FROM flow', db="crash")
    assert body["results"][0]["series"][0]["values"][0][1] == 7


def test_influxql_errors_are_raised_with_the_query(influxdb: InfluxDB) -> None:
    with pytest.raises(ServiceError, match="SELEKT"):
        influxdb.query("SELEKT nothing", db="harness")


def test_a_missing_server_binary_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provisioning.binaries.SEARCH_DIRS", ())
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match=r"apt-get install influxdb"):
        InfluxDB(tmp_path / "db").start()
