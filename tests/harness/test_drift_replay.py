"""Counters that err, through the real broker, aggregator and InfluxDB: the nights' learning is stored
with its evidence, and a dirty lens reaches the technicians as a ``miscounting`` fault notice."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator.config import InfluxConfig
from aggregator.influx import Database, rows
from harness import levelreplay, miscount, realtraffic
from harness.servers import InfluxDB, Mosquitto
from lanewatch.site import load_site
from tests.aggregator.test_drift import SKEWED, traffic
from tests.aggregators import AggregatorProcess, Desk
from tests.conftest import EXAMPLE_SITE, wait_until

SITE = load_site(EXAMPLE_SITE)
VICTIM = "cam-wenru-west"
DAYS = 3


@pytest.mark.slow
def test_a_dirty_lens_is_flagged_to_the_technicians_and_the_learning_is_stored_with_its_evidence(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path
) -> None:
    tz = ZoneInfo(SITE.site.timezone)
    today = datetime.now(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    start = (today - timedelta(days=DAYS)).astimezone(timezone.utc)
    counted, _given = miscount.miscount(SITE, traffic(DAYS, start=start), SKEWED, seed=5)
    flows = counted.device_flows[VICTIM].copy()
    last_day = slice((DAYS - 1) * realtraffic.DAY, DAYS * realtraffic.DAY)
    flows[last_day] = flows[last_day] // 2  # a dirty lens on the last day: half of everything
    counted.device_flows[VICTIM] = flows
    influxdb.query("DROP DATABASE drifttest")
    process = AggregatorProcess(tmp_path, fresh_mosquitto, influxdb, "drifttest", instance="agg-drift",
                                validation={"max_age_h": (DAYS + 1) * 24})  # fmt: skip
    desk = Desk(fresh_mosquitto)
    try:
        process.start().wait_connected()
        levelreplay.replay(SITE, counted, fresh_mosquitto.login, instance="agg-drift", settle_s=2.0)
        assert wait_until(lambda: any(f.device == VICTIM for f in desk.faults()), 30), process.log()[-3000:]
    finally:
        process.cleanup()
        desk.close()
    fault = next(f for f in desk.faults() if f.device == VICTIM)
    assert fault.problem == "miscounting"
    assert fault.zones == []  # it still counts: its zones keep their (corrected) level
    assert "usual share" in fault.text.en
    assert "计数" in fault.text.zh
    assert fault.to  # the technicians
    db = Database(InfluxConfig(url=influxdb.url, database="drifttest"))
    try:
        factors = [row for s in db.query("SELECT * FROM counting_factors") for row in rows(s)]
        closures = [row for s in db.query("SELECT * FROM closures") for row in rows(s)]
        [state] = [row for s in db.query("SELECT last(state) FROM factor_state") for row in rows(s)]
        query = "SELECT occupancy, uncorrected FROM zones WHERE kind = 'grid3'"
        zones = [row for s in db.query(query) for row in rows(s)]
    finally:
        db.close()
    lines = sum(len(d.lines) for d in SITE.devices)
    assert len(factors) == DAYS * lines  # one point per line per night
    assert len(closures) == DAYS * 6  # one equation per third-level zone per night
    flagged = [row for row in factors if row["flagged"]]
    assert {row["device"] for row in flagged} == {VICTIM}
    assert all(row["day_in"] + row["day_out"] > 0 for row in factors)
    assert {row["prior"] for row in factors} == {1.0}  # no line of the example was measured at install
    assert [row["used"] for row in closures[:6]] == [False] * 6  # the first night only sets the reference
    assert state["last"].startswith("{")
    assert any(row["occupancy"] != row["uncorrected"] for row in zones)  # corrected, and uncorrected beside it
