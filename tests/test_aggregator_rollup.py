"""Zone occupancy from cumulative line totals: exact under duplicates and reordering, drift corrected on record."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

from aggregator.rollup import RollUp
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE

SITE = load_site(EXAMPLE_SITE)
T0 = datetime(2026, 11, 29, 2, 0, tzinfo=timezone.utc)  # 10:00 in Fuzhou
ENTRANCE_OF = {d.id: d.entrance for d in SITE.devices}


class Device:
    def __init__(self, device: str, line: str) -> None:
        self.device, self.line = device, line
        self.boot = uuid.uuid4().hex
        self.seq, self.total_in, self.total_out = 0, 0, 0

    def window(self, end: datetime, in_: int, out: int) -> c.CountWindow:
        self.total_in += in_
        self.total_out += out
        message = c.CountWindow(
            site="sanfang-qixiang", device=self.device, line=self.line, boot_id=self.boot, seq=self.seq,
            window_start=end - timedelta(seconds=5), window_end=end, in_=in_, out=out,
            total_in=self.total_in, total_out=self.total_out, in_view=0, model="m", agent_version="t",
        )  # fmt: skip
        self.seq += 1
        return message


def apply(rollup: RollUp, *windows: c.CountWindow) -> None:
    for window in windows:
        rollup.apply(window, ENTRANCE_OF[window.device])


def test_a_gate_fills_its_grid_its_district_and_the_area() -> None:
    rollup = RollUp(SITE)
    gate = Device("cam-yijin-west", "gate")
    apply(rollup, gate.window(T0, 30, 5), gate.window(T0 + timedelta(seconds=5), 10, 2))
    assert [rollup.occupancy(z) for z in ("yijin", "west", "sfqx")] == [33, 33, 33]
    assert rollup.occupancy("nanhou") == 0
    assert rollup.occupancy("east") == 0


def test_a_lane_mouth_moves_people_between_grids_without_changing_the_total() -> None:
    """Yijin Lane's mouth on Nanhou Street: 'in' leaves Nanhou (east) and enters Yijin (west)."""
    rollup = RollUp(SITE)
    gate, mouth = Device("cam-nanhou-north-a", "west-half"), Device("cam-yijin-east", "mouth")
    apply(rollup, gate.window(T0, 100, 0), mouth.window(T0 + timedelta(seconds=1), 40, 10))
    assert (rollup.occupancy("nanhou"), rollup.occupancy("yijin")) == (70, 30)
    assert (rollup.occupancy("west"), rollup.occupancy("east")) == (30, 70)
    assert rollup.occupancy("sfqx") == 100


def test_duplicates_replays_and_older_windows_change_nothing() -> None:
    rollup = RollUp(SITE)
    gate = Device("cam-wenru-west", "gate")
    windows = [gate.window(T0 + timedelta(seconds=5 * i), 7, 3) for i in range(20)]
    apply(rollup, *windows)
    expected = rollup.occupancy("wenru")
    assert expected == 20 * 4
    shuffled = windows[1:] * 2
    random.Random(3).shuffle(shuffled)
    apply(rollup, *shuffled)
    assert rollup.occupancy("wenru") == expected


def test_a_lost_window_is_made_up_by_the_next_one() -> None:
    rollup = RollUp(SITE)
    gate = Device("cam-wenru-west", "gate")
    first, _lost, third = (gate.window(T0 + timedelta(seconds=5 * i), 10, 1) for i in range(3))
    apply(rollup, first, third)
    assert rollup.occupancy("wenru") == 27


def test_a_parent_holds_the_sum_of_its_children() -> None:
    rollup = RollUp(SITE)
    rng = random.Random(5)
    fleet = [Device(d.id, d.lines[0].name) for d in SITE.devices]
    between = {e.id for e in SITE.entrances if e.outside is not None}
    for step in range(50):
        for device in fleet:  # gates bring people in; mouths between grids move a few both ways
            if ENTRANCE_OF[device.device] in between:
                in_, out = rng.randint(0, 2), rng.randint(0, 2)
            else:
                in_, out = rng.randint(3, 9), rng.randint(0, 2)
            apply(rollup, device.window(T0 + timedelta(seconds=5 * step), in_, out))
    stored = rollup.take_points()
    assert not [line for line in stored if line.startswith("corrections,")]  # nothing was clamped
    for zone in SITE.zones:
        children = SITE.children(zone.id)
        if children:
            assert rollup.occupancy(zone.id) == sum(rollup.occupancy(child.id) for child in children)
            assert rollup.raw[zone.id] == sum(rollup.raw[child.id] for child in children)


def test_occupancy_never_goes_below_zero_and_the_clamp_is_recorded() -> None:
    rollup = RollUp(SITE)
    gate = Device("cam-guanglu-west", "gate")
    apply(rollup, gate.window(T0, 2, 0), gate.window(T0 + timedelta(seconds=5), 0, 7))
    assert rollup.occupancy("guanglu") == 0
    corrections = [line for line in rollup.take_points() if line.startswith("corrections,")]
    assert any("zone=guanglu,reason=clamp delta=5i,before=-5i" in line for line in corrections)
    apply(rollup, gate.window(T0 + timedelta(seconds=10), 4, 0))
    assert rollup.occupancy("guanglu") == 4


def test_every_zone_is_reset_at_closing_time_and_the_reset_is_recorded() -> None:
    """The example site closes at 23:30 Fuzhou time (15:30 UTC)."""
    rollup = RollUp(SITE)
    gate = Device("cam-guanglu-west", "gate")
    evening = datetime(2026, 11, 29, 15, 29, 50, tzinfo=timezone.utc)
    apply(rollup, gate.window(evening, 12, 0))
    assert rollup.occupancy("guanglu") == 12
    apply(rollup, gate.window(evening + timedelta(seconds=15), 1, 0))  # 23:30:05
    assert rollup.occupancy("guanglu") == 1
    points = rollup.take_points()
    assert "corrections,site=sanfang-qixiang,zone=guanglu,reason=closing delta=-12i,before=12i" in "\n".join(points)


def test_a_replaced_device_continues_its_entrance_count() -> None:
    """A new device (totals from 0, new boot) at the same entrance adds to, never subtracts from, the count."""
    rollup = RollUp(SITE)
    old = Device("cam-ta-east", "gate")
    apply(rollup, old.window(T0, 50, 10))
    new = Device("cam-ta-east", "gate")
    apply(rollup, new.window(T0 + timedelta(hours=1), 5, 1))
    assert rollup.occupancy("alleys-north") == 44


def test_restore_continues_exactly_where_the_stored_state_ends() -> None:
    rollup = RollUp(SITE)
    gate, mouth = Device("cam-nanhou-south-a", "west-half"), Device("cam-gong-west", "mouth")
    apply(rollup, gate.window(T0, 60, 0), mouth.window(T0, 0, 0), gate.window(T0 + timedelta(seconds=5), 0, 80))
    apply(rollup, mouth.window(T0 + timedelta(seconds=5), 10, 0))
    before = {zone.id: rollup.occupancy(zone.id) for zone in SITE.zones}
    restored = RollUp(SITE)
    occupancy = {z.zone: (z.occupancy, z.time) for z in rollup.zones() if z.time is not None}
    restored.restore(dict(rollup.lines), occupancy)  # type: ignore[arg-type]
    assert {zone.id: restored.occupancy(zone.id) for zone in SITE.zones} == before
    following = mouth.window(T0 + timedelta(seconds=10), 3, 1)
    for r in (rollup, restored):
        apply(r, following)
    assert {z.id: restored.occupancy(z.id) for z in SITE.zones} == {z.id: rollup.occupancy(z.id) for z in SITE.zones}
