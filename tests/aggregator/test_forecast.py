"""Early warning: a `predicted red` before a filling zone is full, once, and only where it helps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import click

from aggregator import notices
from aggregator.config import LevelRule
from aggregator.forecast import Forecaster, score
from control_room.alerts import notice_line
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)  # 10:00 in Fuzhou
RULE = LevelRule()


def feed(
    forecaster: Forecaster,
    zone: str,
    occupancies: list[int],
    level: str = "green",
    start: datetime = T0,
    band: int = 0,
) -> list:
    """One observation a minute; the minute and warning of every warning raised."""
    capacity = SITE.zone(zone).capacity
    raised = []
    for i, occupancy in enumerate(occupancies):
        forecaster.observe(zone, start + timedelta(minutes=i), occupancy)
        warning = forecaster.warn(zone, level, capacity, RULE, band)
        if warning is not None:
            raised.append((i, warning))
    return raised


def test_a_zone_filling_towards_red_is_warned_before_it_gets_there() -> None:
    forecaster = Forecaster(SITE.site.timezone)
    ramp = [600 + 30 * i for i in range(30)]  # Yijin Lane (1,300): +30 a minute, full at minute 24
    raised = feed(forecaster, "yijin", ramp)
    assert len(raised) == 1
    minute, warning = raised[0]
    assert minute < 24 - 5  # more than 5 minutes ahead of red
    assert warning.predicted >= 1300
    assert warning.minutes == 15
    assert warning.occupancy == ramp[minute]


def test_a_crowded_zone_whose_band_will_reach_red_is_warned_as_the_level_engine_will_turn_it_red() -> None:
    """Counters read a crowd low, and the level engine turns a yellow zone red when its band reaches red: a
    forecast that stops short of red by less than the band foretells that red. Without the band, or for a zone
    that will not even be yellow, no warning."""
    ramp = [800 + 10 * i for i in range(30)]  # Yijin Lane (1,300): the forecast ends at 1,240 (95 %)
    assert feed(Forecaster(SITE.site.timezone), "yijin", ramp, level="yellow") == []
    raised = feed(Forecaster(SITE.site.timezone), "yijin", ramp, level="yellow", band=100)
    assert len(raised) == 1
    _minute, warning = raised[0]
    assert warning.predicted < 1300 <= warning.predicted + warning.band
    assert f"±{warning.band}" in warning.reason
    low = [400 + 10 * i for i in range(30)]  # forecast under the yellow threshold: the band does not count
    assert feed(Forecaster(SITE.site.timezone), "yijin", low, band=600) == []


def test_a_steady_or_emptying_zone_gets_no_warning() -> None:
    forecaster = Forecaster(SITE.site.timezone)
    assert feed(forecaster, "yijin", [1100] * 30) == []
    assert feed(Forecaster(SITE.site.timezone), "yijin", [1250 - 10 * i for i in range(30)]) == []


def test_no_warning_for_a_zone_already_red_or_unknown() -> None:
    ramp = [600 + 30 * i for i in range(30)]
    assert feed(Forecaster(SITE.site.timezone), "yijin", ramp, level="red") == []
    assert feed(Forecaster(SITE.site.timezone), "yijin", ramp, level="unknown") == []


def test_one_warning_per_surge_until_the_forecast_has_cleared_for_the_dwell_time() -> None:
    forecaster = Forecaster(SITE.site.timezone)
    surge = [600 + 30 * i for i in range(20)]
    calm = [600] * 20  # forecast well below red for 20 minutes: re-armed
    raised = feed(forecaster, "yijin", surge + surge[::-1] + calm + surge)
    assert len(raised) == 2


def test_the_usual_daily_curve_corrects_a_flow_that_is_about_to_turn() -> None:
    """Yesterday the zone peaked at 10:15 and emptied; today it rises the same way: the curve says the
    rise ends, so the warning that recent flow alone would raise is not raised."""
    day = [int(1300 * (0.5 + 0.4 * min(i, 30 - i) / 15)) if i <= 30 else 650 for i in range(60)]  # peak 0.9
    with_curve, flow_only = Forecaster(SITE.site.timezone), Forecaster(SITE.site.timezone, curve_weight=0.0)
    for forecaster in (with_curve, flow_only):
        feed(forecaster, "yijin", day, start=T0 - timedelta(days=1))
        forecaster.observe("yijin", T0 - timedelta(hours=12), 0)  # overnight
    assert feed(flow_only, "yijin", day) != []
    assert feed(with_curve, "yijin", day) == []


def test_a_predicted_red_notice_meters_entry_and_diverts_only_to_green_neighbours_with_room() -> None:
    forecaster = Forecaster(SITE.site.timezone)
    (_minute, warning), *_ = feed(forecaster, "wenru", [500 + 30 * i for i in range(30)])
    levels = {"yijin": "green", "guanglu": "yellow", "nanhou": "green", "wenru": "yellow"}
    shares = {"yijin": 0.3, "guanglu": 0.85, "nanhou": 0.75, "wenru": 0.8}
    notice = notices.predicted(SITE, warning, levels.__getitem__, shares.__getitem__)
    assert c.decode("zone_notice", c.encode(notice)) == notice  # within the contract's limits
    assert notice.kind == "predicted_red"
    assert notice.level == "yellow"  # the zone's level now; the forecast is in the reason
    assert notice.actions.divert_to == ["yijin"]  # not Guanglu (yellow) nor Nanhou (75 % full)
    assert notice.actions.meter_inbound == [e.id for e, _s in SITE.boundary_entrances("wenru")]
    assert notice.actions.close_inbound == []
    assert "15" in notice.text.en
    assert "Yijin" in notice.text.en
    assert "衣锦坊" in notice.text.zh
    assert "officer-huang" in notice.to
    line = click.unstyle(notice_line(SITE, notice, ZoneInfo(SITE.site.timezone)))
    assert "FORECAST RED" in line  # what a staff desk sees in `lanewatch alerts watch`
    assert "now yellow" in line


def test_score_matches_warnings_to_the_red_entries_they_foretold() -> None:
    reds = [("yijin", T0 + timedelta(minutes=20)), ("nanhou", T0 + timedelta(minutes=50))]
    warnings = [("yijin", T0 + timedelta(minutes=8)), ("wenru", T0)]  # nanhou unwarned, wenru false
    result = score(reds, warnings)
    assert (result.reds, result.warned, result.lead_min) == (2, 1, [12.0])
    assert (result.warnings, result.false) == (2, 1)
