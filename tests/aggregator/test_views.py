"""People in view as an anchor: cameras that see part of a zone hold its occupancy where the counts drift.

Days of simulated visitors on the example site, whose cameras see part of their lanes (``view`` in the
inventory; ``harness.realtraffic`` draws who is in view from the true occupancy), counted by counters
that err; staff count the busy zones on the first days, which is how the views learn their scale.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Optional

import numpy as np
import pytest

from aggregator.config import DriftConfig
from aggregator.rollup import RollUp
from harness import headcounts, miscount, realtraffic
from lanewatch import contract as c
from lanewatch.site import load_site
from lanewatch.yamlconfig import ConfigError
from tests.aggregator.test_drift import LEAVES, SITE, SKEWED, STEP, traffic
from tests.aggregator.test_rollup import ENTRANCE_OF, Device
from tests.conftest import EXAMPLE_SITE


def feed(
    rollup: RollUp,
    counted: realtraffic.Traffic,
    counts: Optional[dict[int, list[c.Headcount]]] = None,
    records: Optional[list[str]] = None,
) -> dict[str, list[tuple[int, int, Optional[int]]]]:
    """The counted traffic as 5-minute windows, each with the people in the device's view at its end, and the
    headcounts at their minutes; per third-level zone and window end: (true, in use, counted alone). The
    corrections recorded go to ``records``."""
    devices = {d.id: Device(d.id, d.lines[0].name) for d in SITE.devices}
    seen: dict[str, list[tuple[int, int, Optional[int]]]] = {zone: [] for zone in LEAVES}
    for first in range(0, counted.minutes, STEP):
        last = first + STEP - 1
        end = counted.minute_end(last)
        for device_id, device in devices.items():
            in_, out = (int(n) for n in counted.device_flows[device_id][first : first + STEP].sum(axis=0))
            view = counted.views.get(device_id)
            window = device.window(end, in_, out).model_copy(
                update={
                    "window_start": end - timedelta(minutes=STEP),
                    "in_view": int(view[last]) if view is not None else 0,
                }
            )
            rollup.apply(window, ENTRANCE_OF[device_id])
        for minute in range(first, first + STEP):
            for count in (counts or {}).get(minute, []):
                rollup.anchor(count)
        states = {s.zone: s for s in rollup.zones()}
        stored = rollup.take_points()
        if records is not None:
            records.extend(line for line in stored if line.startswith("corrections,"))
        for zone in LEAVES:
            seen[zone].append((int(counted.occupancy[zone][last]), states[zone].occupancy, states[zone].flow))
    return seen


def worst_gap(seen: dict[str, list[tuple[int, int, Optional[int]]]], day: int) -> float:
    """The largest gap between the occupancy in use and the truth on one day, as a share of the zone's capacity."""
    per_day = realtraffic.DAY // STEP
    return max(
        abs(row[1] - row[0]) / SITE.zone(zone).capacity
        for zone, rows in seen.items()
        for row in rows[day * per_day : (day + 1) * per_day]
    )


def staff_on_first_days(truth: realtraffic.Traffic, days: int, error: float = 0.03) -> dict[int, list[c.Headcount]]:
    """Staff who count every zone above a third of its capacity every two hours, on the first ``days`` only."""
    counts = headcounts.staff_headcounts(SITE, truth, every_min=120, above=0.3, error=error)
    return {minute: hc for minute, hc in counts.items() if minute < days * realtraffic.DAY}


def test_views_taught_by_headcounts_hold_a_zone_whose_counter_goes_wrong_near_the_truth() -> None:
    truth = traffic(4)
    counted, _given = miscount.miscount(SITE, truth, SKEWED, seed=3)
    day = slice(3 * realtraffic.DAY, 4 * realtraffic.DAY)  # on the last day, knocked askew, it misses a third going in
    flows = counted.device_flows["cam-wenru-west"]
    flows[day, 0] = np.random.default_rng(1).binomial(flows[day, 0], 0.67)
    counts = staff_on_first_days(truth, 3)
    plain = feed(RollUp(SITE, drift=DriftConfig(views=False)), counted, counts)
    records: list[str] = []
    viewed = feed(RollUp(SITE), counted, counts, records)
    # the counted occupancy itself is the same either way: views are weighed in, never written into it
    assert all(row[2] == other[1] for zone in LEAVES for row, other in zip(viewed[zone], plain[zone]))
    without, with_views = worst_gap({"wenru": plain["wenru"]}, 3), worst_gap({"wenru": viewed["wenru"]}, 3)
    assert without > 0.2  # the counts alone drift all day ...
    assert with_views < 0.5 * without  # ... and the views hold the zone nearer the truth
    pulls = [line for line in records if "zone=wenru,reason=view" in line]  # on the record: by which cameras
    assert pulls
    assert all('by="cam-wenru-west,cam-wenru-east"' in line for line in pulls if "by=" in line)


def test_exact_counters_stay_exact_whatever_the_views_see() -> None:
    truth = traffic(3)
    counts = staff_on_first_days(truth, 2, error=0.0)  # staff who count exactly, too
    seen = feed(RollUp(SITE), truth, counts)
    assert all(row[1] == row[0] for rows in seen.values() for row in rows)


def test_a_view_is_not_believed_while_its_device_counts_off_its_usual_share_nor_once_it_is_stale() -> None:
    truth = traffic(3)
    counted, _given = miscount.miscount(SITE, truth, SKEWED, seed=3)
    busy = next(
        i for i in range(len(truth.occupancy["wenru"])) if i > 2 * realtraffic.DAY and truth.occupancy["wenru"][i] > 300
    )
    rollup = RollUp(SITE)
    feed(rollup, realtraffic_until(counted, busy), staff_on_first_days(truth, 2))
    used = rollup.viewed()["wenru"][2].devices
    assert set(used) == {"cam-wenru-west", "cam-wenru-east"}
    rollup.factors.hourly.scale["cam-wenru-west"] = 2.0  # the share check found it counting half
    assert rollup.viewed()["wenru"][2].devices == ("cam-wenru-east",)
    rollup.factors.views.seen["cam-wenru-east"].time -= timedelta(minutes=10)  # its view has not been heard since
    assert "wenru" not in rollup.viewed()


def realtraffic_until(counted: realtraffic.Traffic, minute: int) -> realtraffic.Traffic:
    """The traffic's first minutes, up to a whole window past ``minute``."""
    end = (minute // STEP + 1) * STEP
    return realtraffic.Traffic(
        counted.start,
        {e: f[:end] for e, f in counted.flows.items()},
        {d: f[:end] for d, f in counted.device_flows.items()},
        {z: o[:end] for z, o in counted.occupancy.items()},
        counted.source,
        {d: v[:end] for d, v in counted.views.items()},
    )


@pytest.mark.parametrize(
    ("view", "why"),
    [
        ("{zone: west, share: 0.1}", "'west' is not a third-level grid"),
        ("{zone: wenu, share: 0.1}", "did you mean 'wenru'"),
        ("{zone: wenru, share: 0}", "must be > 0"),
    ],
)
def test_a_view_of_a_zone_it_cannot_anchor_is_refused_with_the_reason(tmp_path, view: str, why: str) -> None:
    text = EXAMPLE_SITE.read_text(encoding="utf-8").replace("view: {zone: wenru, share: 0.06}", f"view: {view}", 1)
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=why):
        load_site(path)


def test_the_example_sites_cameras_see_their_lanes() -> None:
    seen = {d.id: d.view for d in SITE.devices}
    assert seen["radar-huang-west"] is None  # a radar counter sees nobody in view
    assert all(
        view is not None and SITE.zone(view.zone).kind == "grid3" for d, view in seen.items() if d.startswith("cam-")
    )
    assert np.isclose(sum(v.share for v in seen.values() if v is not None and v.zone == "wenru"), 0.12)
