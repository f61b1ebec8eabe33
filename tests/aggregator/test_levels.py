"""Crowd levels: immediate escalation, hysteresis and dwell on the way down, unknown when blind, and
notices that never send visitors into trouble."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from aggregator import notices
from aggregator.config import LevelsConfig
from aggregator.levels import LevelEngine
from aggregator.rollup import RollUp, ZoneState
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
T0 = datetime(2026, 11, 29, 6, 0, tzinfo=timezone.utc)


def state(zone: str, occupancy: int, density: float | None = None) -> ZoneState:
    capacity = SITE.zone(zone).capacity
    return ZoneState(zone, occupancy, occupancy, capacity, density, T0)


def run(engine: LevelEngine, zone: str, shares: list[float], step_s: float = 10) -> list[tuple[float, str]]:
    """Feed a series of occupancy shares, one every ``step_s``; the (seconds, level) of every change."""
    capacity = SITE.zone(zone).capacity
    changes = []
    for i, share in enumerate(shares):
        change = engine.update(state(zone, round(share * capacity)), 1.0, [], T0 + timedelta(seconds=i * step_s))
        if change is not None:
            changes.append((i * step_s, change.level))
    return changes


def test_escalation_is_immediate_and_the_way_down_waits_for_the_dwell() -> None:
    engine = LevelEngine(SITE, LevelsConfig())
    shares = [0.5, 0.85, 1.02] + [0.5] * 40  # 400 s below every threshold
    assert run(engine, "nanhou", shares) == [(0, "green"), (10, "yellow"), (20, "red"), (330, "green")]


def test_a_zone_hovering_at_a_threshold_does_not_flap() -> None:
    engine = LevelEngine(SITE, LevelsConfig())
    hovering = [0.79, 0.81] * 100  # noise around the 80 % warning line for half an hour
    assert run(engine, "wenru", hovering) == [(0, "green"), (10, "yellow")]


def test_falling_back_into_the_band_restarts_the_dwell() -> None:
    engine = LevelEngine(SITE, LevelsConfig())
    shares = [1.05] + [0.6] * 20 + [0.95] + [0.6] * 40  # dips below 90 % for 200 s, back up, then down
    assert run(engine, "yijin", shares) == [(0, "red"), (520, "green")]


def test_density_alone_can_raise_the_level() -> None:
    """Fruin: over 1.08 persons/m² is at the limit of moving flow, whatever the nominal capacity says."""
    engine = LevelEngine(SITE, LevelsConfig())
    change = engine.update(state("guanglu", 300, density=1.2), 1.0, [], T0)
    assert change is not None
    assert change.level == "red"
    assert "density 1.20 persons/m²" in change.reason


def test_a_zone_without_full_coverage_is_unknown_never_green() -> None:
    engine = LevelEngine(SITE, LevelsConfig())
    assert engine.update(state("alleys-north", 10), 1.0, [], T0).level == "green"  # type: ignore[union-attr]
    change = engine.update(state("alleys-north", 10), 0.75, ["cam-ta-east"], T0 + timedelta(seconds=5))
    assert change is not None
    assert (change.level, change.previous) == ("unknown", "green")
    assert "no data from cam-ta-east" in change.reason
    back = engine.update(state("alleys-north", 10), 1.0, [], T0 + timedelta(seconds=10))
    assert back is not None
    assert back.level == "green"


def test_a_red_notice_closes_the_entrances_and_diverts_only_to_green_neighbours_with_room() -> None:
    engine = LevelEngine(SITE, LevelsConfig())
    for zone, share in {"wenru": 0.2, "nanhou": 0.85, "guanglu": 0.1}.items():
        run(engine, zone, [share])
    change = engine.update(state("yijin", 1400), 1.0, [], T0)
    assert change is not None
    shares = {"wenru": 0.2, "nanhou": 0.85, "guanglu": 0.1, "yijin": 1400 / 1300}
    message = notices.notice(SITE, change, engine.level, shares.__getitem__)
    assert message.level == "red"
    assert message.actions.divert_to == ["wenru"]  # nanhou is yellow: never sent there
    assert set(message.actions.close_inbound) == {"yijin-west", "yijin-east"}
    assert {"officer-huang", "staff-yijin-head"} <= set(message.to)
    assert [s for s in message.to if s.startswith("sign-")]  # the signs at its entrances
    assert "文儒坊" in message.text.zh
    assert "Wenru" in message.text.en
    c.decode("zone_notice", c.encode(message))  # a valid contract message
    topics = notices.topics(SITE, message)
    assert topics[0] == "lanewatch/v1/sanfang-qixiang/zones/yijin/notices"
    assert all(t.startswith("lanewatch/v1/sanfang-qixiang/entrances/yijin-") for t in topics[1:])


def test_a_surge_of_arrivals_raises_the_level_before_the_zone_is_full() -> None:
    rules = LevelsConfig.model_validate({"zones": {"wenru": {"inflow_yellow_per_min": 200, "inflow_red_per_min": 400}}})
    engine = LevelEngine(SITE, rules)
    calm = ZoneState("wenru", 300, 300, 1200, None, T0, inflow_per_min=50)
    assert engine.update(calm, 1.0, [], T0).level == "green"  # type: ignore[union-attr]
    surge = ZoneState("wenru", 350, 350, 1200, None, T0, inflow_per_min=420)
    change = engine.update(surge, 1.0, [], T0 + timedelta(seconds=5))
    assert change is not None
    assert change.level == "red"
    assert change.reason == "inflow 420 people/min (limit 400)"


def test_the_roll_up_counts_people_entering_each_zone_over_the_last_minute() -> None:
    from tests.aggregator.test_rollup import Device, apply

    rollup = RollUp(SITE)
    gate, mouth = Device("cam-wenru-west", "gate"), Device("cam-wenru-east", "mouth")
    for i in range(24):  # two minutes of 5 s windows: 10 in at the gate, 3 out through the mouth
        apply(
            rollup, gate.window(T0 + timedelta(seconds=5 * i), 10, 0), mouth.window(T0 + timedelta(seconds=5 * i), 0, 3)
        )
    assert rollup.inflow_per_min("wenru") == 120  # the last minute: 12 windows of 10
    assert rollup.inflow_per_min("nanhou") == 36  # the mouth's "out" leaves Wenru into Nanhou Street


def test_a_zone_whose_estimate_may_be_red_is_never_shown_green_and_its_notice_says_the_count_is_uncertain() -> None:
    engine = LevelEngine(SITE, LevelsConfig())
    capacity = SITE.zone("nanhou").capacity
    sure = ZoneState("nanhou", int(0.6 * capacity), int(0.6 * capacity), capacity, None, T0, band=50)
    assert engine.update(sure, 1.0, [], T0).level == "green"  # type: ignore[union-attr]
    half = int(0.6 * capacity)
    unsure = ZoneState("nanhou", half, half, capacity, None, T0, band=int(0.45 * capacity))
    change = engine.update(unsure, 1.0, [], T0 + timedelta(seconds=10))
    assert change is not None
    assert change.level == "yellow"
    assert "may be as high as" in change.reason
    notice = notices.notice(SITE, change, engine.level, lambda _zone: 0.5, uncertain_at=0.1)
    assert notice.band == int(0.45 * capacity)
    assert "估算" in notice.text.zh
    assert "estimate" in notice.text.en
    calm = notices.notice(SITE, change.__class__(**{**change.__dict__, "state": sure}), engine.level, lambda _z: 0.5)
    assert "estimate" not in calm.text.en


def test_a_crowded_zone_that_may_be_full_is_red_unless_the_site_says_otherwise() -> None:
    """Yellow by its estimate (90 %) with a measured band of 15 % of capacity: it may be full, so it is
    red; with a narrow band, or one not measured yet (the default guess), it stays yellow; and a site
    that wants red only on the estimate can say so."""
    capacity = SITE.zone("nanhou").capacity
    crowded = int(0.9 * capacity)
    unsure = ZoneState("nanhou", crowded, crowded, capacity, None, T0, band=int(0.15 * capacity), measured=True)
    sure = ZoneState("nanhou", crowded, crowded, capacity, None, T0, band=int(0.05 * capacity), measured=True)
    guessed = ZoneState("nanhou", crowded, crowded, capacity, None, T0, band=int(0.15 * capacity))
    change = LevelEngine(SITE, LevelsConfig()).update(unsure, 1.0, [], T0)
    assert change is not None
    assert change.level == "red"
    assert "may be as high as 105%" in change.reason
    assert LevelEngine(SITE, LevelsConfig()).update(sure, 1.0, [], T0).level == "yellow"  # type: ignore[union-attr]
    assert LevelEngine(SITE, LevelsConfig()).update(guessed, 1.0, [], T0).level == "yellow"  # type: ignore[union-attr]
    strict = LevelsConfig.model_validate({"default": {"red_on_band": False}})
    assert LevelEngine(SITE, strict).update(unsure, 1.0, [], T0).level == "yellow"  # type: ignore[union-attr]
