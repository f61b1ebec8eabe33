"""InfluxDB writes and reads: 1.x through /write (the real Debian server), 2.x through influxdb-client.

Debian has no InfluxDB 2.x; the influxdb-client path is checked against VictoriaMetrics, a real
server that accepts the same ``/api/v2/write`` line protocol, and the points are read back from it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from aggregator import points
from aggregator.config import DriftConfig, InfluxConfig
from aggregator.drift import CountingFactors
from aggregator.influx import Database, PointsRefusedError, RefusedError, UnavailableError, rows
from harness.servers import InfluxDB, VictoriaMetrics, free_port
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE, wait_until
from tests.samples import samples

NOW = datetime.now(timezone.utc).replace(microsecond=123456)


def windows(n: int) -> list[c.CountWindow]:
    base = samples()["count"]
    return [
        base.model_copy(update={"seq": i, "window_start": NOW - timedelta(seconds=5 * (n - i + 1)),
                                "window_end": NOW - timedelta(seconds=5 * (n - i)), "in_": i % 7, "out": i % 3})
        for i in range(n)
    ]  # fmt: skip


def v1(influxdb: InfluxDB, database: str) -> Database:
    return Database(InfluxConfig(url=influxdb.url, database=database))


def test_count_windows_round_trip_through_influxdb_1x(influxdb: InfluxDB) -> None:
    db = v1(influxdb, f"t{uuid.uuid4().hex[:8]}")
    db.prepare()
    sent = windows(50)
    db.write([points.count(w, "yijin-west", "yijin") for w in sent])
    [series] = db.query('SELECT "in", "out", "seq", boot_id FROM counts WHERE device = \'cam-yijin-west\'')
    stored = rows(series)
    assert [r["seq"] for r in stored] == list(range(50))
    assert sum(r["in"] for r in stored) == sum(w.in_ for w in sent)
    assert stored[-1]["time"] == points.ns(sent[-1].window_end)  # the device's time, to the microsecond


def test_writing_the_same_window_twice_keeps_one_point(influxdb: InfluxDB) -> None:
    """What makes redelivery harmless: a window's point is keyed by device, line and window end."""
    db = v1(influxdb, f"t{uuid.uuid4().hex[:8]}")
    db.prepare()
    sent = [points.count(w, "yijin-west", "yijin") for w in windows(10)]
    db.write(sent)
    db.write(sent[3:] + sent[:3])
    [series] = db.query('SELECT count("in"), sum("in") FROM counts')
    assert rows(series)[0]["count"] == 10
    assert rows(series)[0]["sum"] == sum(w.in_ for w in windows(10))


def test_every_measurement_is_accepted_by_influxdb_1x(influxdb: InfluxDB) -> None:
    db = v1(influxdb, f"t{uuid.uuid4().hex[:8]}")
    db.prepare()
    s = samples()
    lines = [
        points.heartbeat(s["heartbeat"], "yijin-west"),
        points.heartbeat(s["heartbeat"].model_copy(update={"inference_ms": None, "cpu_temp_c": None,
                                                           "clock_synced": None, "time": NOW}), "yijin-west"),
        points.availability(s["availability"], "yijin-west", NOW),
        points.zone("sanfang-qixiang", "yijin", "grid3", 120, 135, 118, 40, 5200, 1300, 2600.0, NOW),
        points.zone("sanfang-qixiang", "sfqx", "area", 0, -4, 0, 0, 0, 14000, None, NOW),
        points.line_state("sanfang-qixiang", "cam-yijin-west", "gate", 48211, 47950, 261, "ab" * 16, NOW),
        points.correction("sanfang-qixiang", "yijin", "clamp", 4, -4, NOW),
        points.correction("sanfang-qixiang", "wenru", "headcount", -40, 540, NOW, by="officer-huang", observed=500),
        points.status(s["status"]),
    ]  # fmt: skip
    site = load_site(EXAMPLE_SITE)
    learning = CountingFactors(site, DriftConfig())
    day = {key: (1000 + n, 990 + n) for n, key in enumerate(learning.keys)}
    night = learning.learn(day, NOW)
    lines += points.night(site.site.id, night, learning.dumps())
    db.write(lines)
    measurements = {series["name"]: len(rows(series)) for series in db.query("SELECT * FROM /.*/")}
    assert measurements == {"heartbeat": 2, "availability": 1, "zones": 2, "line_state": 1, "corrections": 2,
                            "aggregator": 1, "counting_factors": len(learning.keys), "closures": 6,
                            "factor_state": 1}  # fmt: skip
    [state] = db.query("SELECT last(state) FROM factor_state")
    CountingFactors(site, DriftConfig()).loads(rows(state)[0]["last"])  # what a restart reads back


def test_a_missing_database_is_a_refusal_that_says_what_to_fix(influxdb: InfluxDB) -> None:
    db = v1(influxdb, "never-created")
    with pytest.raises(RefusedError, match=r"InfluxDB has no database 'never-created'.*create it or fix the influxdb"):
        db.write([points.count(windows(1)[0], "yijin-west", "yijin")])


def test_points_of_the_wrong_type_are_refused_for_good(influxdb: InfluxDB) -> None:
    db = v1(influxdb, f"t{uuid.uuid4().hex[:8]}")
    db.prepare()
    db.write([f"counts,device=x in=1i {points.ns(NOW)}"])
    with pytest.raises(PointsRefusedError, match="field type conflict"):
        db.write([f'counts,device=x in="many" {points.ns(NOW) + 1}'])


def test_an_unreachable_database_is_worth_retrying() -> None:
    db = Database(InfluxConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=2))
    with pytest.raises(UnavailableError, match="unreachable: Connection refused"):
        db.write(["counts in=1i 1"])


def test_influxdb_2x_writes_through_influxdb_client_are_stored(victoria_metrics: VictoriaMetrics) -> None:
    config = InfluxConfig(url=victoria_metrics.url, api="v2", org="lanewatch", bucket="sanfang", token_env="PATH")
    db = Database(config)
    sent = windows(30)
    db.write([points.count(w, "yijin-west", "yijin") for w in sent])
    db.write([points.heartbeat(samples()["heartbeat"].model_copy(update={"time": NOW}), "yijin-west")])
    series: dict = {}

    def exported() -> bool:  # VictoriaMetrics makes new rows readable about a second after the write
        series.update(
            {s["metric"]["__name__"]: s for s in victoria_metrics.export('{__name__=~"counts_.*|heartbeat_.*"}')}
        )
        return "heartbeat_fps" in series and len(series.get("counts_seq", {}).get("values", [])) == 30

    assert wait_until(exported, 30)
    assert series["counts_in"]["metric"]["device"] == "cam-yijin-west"
    assert series["counts_in"]["metric"]["zone"] == "yijin"
    assert sum(series["counts_in"]["values"]) == sum(w.in_ for w in sent)
    assert sorted(series["counts_seq"]["values"]) == list(range(30))
    assert series["counts_in"]["timestamps"][-1] == points.ns(sent[-1].window_end) // 1_000_000  # ms
    assert series["heartbeat_fps"]["values"] == [14.8]
    db.close()


def test_the_v2_path_needs_org_and_bucket() -> None:
    with pytest.raises(ValueError, match="api v2 needs org and bucket"):
        InfluxConfig(api="v2", org="lanewatch")


@pytest.mark.parametrize(
    ("status", "kind", "says"),
    [
        (503, UnavailableError, "answered 503"),
        (500, UnavailableError, "answered 500"),
        (429, UnavailableError, "answered 429"),
        (401, RefusedError, "check influxdb.username/password"),
        (403, RefusedError, "check influxdb.username/password"),
        (413, RefusedError, "lower influxdb.batch_size"),
        (400, PointsRefusedError, "refused the points (400)"),
    ],
)
def test_http_answers_are_sorted_into_retry_fix_or_set_aside(status: int, kind: type, says: str) -> None:
    """5xx and 429 are retried (with the spool behind them); other 4xx say what to fix."""
    from aggregator.influx import _classify

    error = _classify(status, '{"error":"x"}', InfluxConfig())
    assert isinstance(error, kind)
    assert says in str(error)


def test_a_v2_refusal_names_the_token() -> None:
    from aggregator.influx import _classify

    error = _classify(401, "unauthorized", InfluxConfig(api="v2", org="o", bucket="b"))
    assert "check influxdb.token (token_env or token_file)" in str(error)
