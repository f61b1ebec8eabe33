"""Control-room reports from what the aggregator stored for a real week: the numbers are the true ones."""

from __future__ import annotations

import csv
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import yaml

from control_room import reports
from control_room.reports import Report, period_bounds
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE, ReplayedWeek, run_cli

SITE = load_site(EXAMPLE_SITE)
TZ = ZoneInfo(SITE.site.timezone)


def test_period_bounds_are_local_calendar_periods() -> None:
    day = datetime(2026, 2, 18).date()  # a Wednesday
    assert period_bounds("day", day, TZ) == (datetime(2026, 2, 18, tzinfo=TZ), datetime(2026, 2, 19, tzinfo=TZ))
    assert period_bounds("week", day, TZ) == (datetime(2026, 2, 16, tzinfo=TZ), datetime(2026, 2, 23, tzinfo=TZ))
    assert period_bounds("month", day, TZ) == (datetime(2026, 2, 1, tzinfo=TZ), datetime(2026, 3, 1, tzinfo=TZ))


def test_a_weekly_report_of_a_replayed_week_tells_the_true_numbers(replayed_week: ReplayedWeek, tmp_path: Path) -> None:
    traffic = replayed_week.traffic
    config = tmp_path / "aggregator.yaml"
    config.write_text(
        yaml.safe_dump({"influxdb": {"url": replayed_week.influx.url, "database": replayed_week.database}})
    )
    first_day = traffic.start.astimezone(TZ).date()
    result = run_cli("report", "--period", "week", "--date", str(first_day), "--out", str(tmp_path / "out"),
                     "--config", str(config))  # fmt: skip
    assert result.exit_code == 0, result.output
    start, end = period_bounds("week", first_day, TZ)
    stem = f"sanfang-qixiang-week-{start:%Y-%m-%d}"
    out = tmp_path / "out"
    markdown = (out / f"{stem}.md").read_text()
    for chart in ("occupancy", "hourly", "levels", "entrances", "map"):
        png = out / f"{stem}-{chart}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
        assert f"]({png.name})" in markdown
    # The minutes of the replay inside the report's week, and the truth for them.
    ends = np.array([traffic.minute_end(i) for i in range(traffic.minutes)])
    inside = (ends >= start) & (ends < end)
    zones = {row["zone"]: row for row in csv.DictReader((out / f"{stem}-zones.csv").open())}
    for zone in SITE.zones:
        truth = traffic.occupancy[zone.id][inside]
        assert int(zones[zone.id]["peak"]) == truth.max(), zone.id
        at = ends[inside][truth.argmax()].astimezone(TZ)
        assert zones[zone.id]["peak_time"] == at.strftime("%Y-%m-%d %H:%M"), zone.id
        red = float(zones[zone.id]["hours_red"])
        assert (red > 0) == bool((truth >= zone.capacity).any()), zone.id  # red hours exactly where it was full
    entrances = {row["entrance"]: row for row in csv.DictReader((out / f"{stem}-entrances.csv").open())}
    for entrance in SITE.entrances:
        flows = traffic.flows[entrance.id][inside]
        assert (int(entrances[entrance.id]["in"]), int(entrances[entrance.id]["out"])) == tuple(flows.sum(axis=0))
    hourly = list(csv.DictReader((out / f"{stem}-hourly.csv").open()))
    gates = [e.id for e, sign in SITE.boundary_entrances(SITE.root.id) if sign > 0]
    for hour in range(24):
        minutes = inside & np.array([(t - timedelta(minutes=1)).astimezone(TZ).hour == hour for t in ends])
        assert int(hourly[hour]["entering"]) == sum(int(traffic.flows[g][minutes, 0].sum()) for g in gates), hour
    devices = {row["device"]: row for row in csv.DictReader((out / f"{stem}-devices.csv").open())}
    assert set(devices) == {d.id for d in SITE.devices}
    assert "Sanfang Qixiang" in markdown
    assert "querying InfluxDB" in result.stderr  # the progress bar


def test_a_report_without_a_database_says_where_it_looked(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text(yaml.safe_dump({"influxdb": {"url": "http://127.0.0.1:9"}}))
    result = run_cli("report", "--config", str(config), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "http://127.0.0.1:9" in result.stderr
    assert "unreachable" in result.stderr


def test_the_default_report_is_the_day_so_far_and_an_empty_one_says_where_it_looked(
    replayed_week: ReplayedWeek, tmp_path: Path
) -> None:
    """Today's report (the default) from a database with nothing in it says so, with the database it read,
    and writes nothing; the last replayed day shows its devices heard all day, not a share of it."""
    replayed_week.influx.query('CREATE DATABASE "nothing-here"')
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"influxdb": {"url": replayed_week.influx.url, "database": "nothing-here"}}))
    today = run_cli("report", "--config", str(empty), "--out", str(tmp_path / "today"))
    assert today.exit_code == 1
    assert f"nothing stored for the day from {datetime.now(TZ):%Y-%m-%d} 00:00" in today.stderr
    assert "database 'nothing-here'" in today.stderr
    assert not (tmp_path / "today").exists()
    config = tmp_path / "aggregator.yaml"
    config.write_text(
        yaml.safe_dump({"influxdb": {"url": replayed_week.influx.url, "database": replayed_week.database}})
    )
    last = replayed_week.traffic.minute_end(replayed_week.traffic.minutes - 1).astimezone(TZ).date() - timedelta(days=1)
    result = run_cli("report", "--config", str(config), "--date", str(last), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "out" / f"{SITE.site.id}-day-{last}-devices.csv").open()))
    assert {row["device"] for row in rows} == {d.id for d in SITE.devices}
    assert all(float(row["availability"]) >= 0.95 for row in rows), rows


def test_the_charts_speak_chinese_first_with_every_glyph_drawn(tmp_path: Path) -> None:
    """The control room reads Chinese: the charts name zones and gates in Chinese and English, and the
    font that draws them is installed (matplotlib warns of every glyph it cannot draw: here, an error)."""
    start, end = period_bounds("day", datetime(2026, 11, 30).date(), TZ)
    report = Report(SITE, "day", start, end)
    leaves = [z for z in SITE.zones if not SITE.children(z.id)]
    report.occupancy = {z.id: [(start + timedelta(minutes=15 * i), 10.0 * i) for i in range(96)] for z in leaves}
    report.hourly = {z.id: [float(h) for h in range(24)] for z in leaves}
    report.entering = list(range(24))
    report.entrances = {e.id: (100 + i, 90 + i) for i, e in enumerate(SITE.entrances)}
    report.level_hours = {z.id: {"yellow": 1.0, "red": 0.5, "unknown": 0.0} for z in SITE.zones}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" fails the test
        written = reports.write(report, tmp_path)
    charts = [p for p in written if p.suffix == ".png"]
    assert len(charts) == 5  # occupancy, hourly, levels, entrances, and the site's plan
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in charts)
