"""Zone occupancy from cumulative line totals: exact under duplicates and reordering, drift corrected on record."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from aggregator.dedup import Dedup
from aggregator.rollup import ImplausibleTotalsError, RollUp
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
    occupancy = {z.zone: (z.occupancy, z.uncorrected, z.time) for z in rollup.zones() if z.time is not None}
    restored.restore(dict(rollup.lines), occupancy, dict(rollup.day))  # type: ignore[arg-type]
    assert restored.day == rollup.day
    assert {zone.id: restored.occupancy(zone.id) for zone in SITE.zones} == before
    following = mouth.window(T0 + timedelta(seconds=10), 3, 1)
    for r in (rollup, restored):
        apply(r, following)
    assert {z.id: restored.occupancy(z.id) for z in SITE.zones} == {z.id: rollup.occupancy(z.id) for z in SITE.zones}


# --- untrusted totals -------------------------------------------------------------------------------------


def jumped(window: c.CountWindow, **totals: int) -> c.CountWindow:
    return window.model_copy(update=totals)


def test_totals_that_jump_further_than_the_entrance_can_pass_are_refused_and_change_nothing() -> None:
    """Yijin's west gate is 4.5 m wide: at most 22.5 people a second, both ways together."""
    rollup = RollUp(SITE)
    gate = Device("cam-yijin-west", "gate")
    apply(rollup, gate.window(T0, 10, 2))
    before = {zone.id: rollup.occupancy(zone.id) for zone in SITE.zones}
    for totals in ({"total_in": 20_010}, {"total_in": c.MAX_TOTAL}, {"total_out": 20_002}, {"total_out": c.MAX_TOTAL}):
        poisoned = jumped(gate.window(T0 + timedelta(seconds=5), 1, 0), **totals)
        gate.total_in -= 1  # the device's real count stays where it was
        with pytest.raises(ImplausibleTotalsError, match="more than the 122 people entrance yijin-west can pass"):
            rollup.apply(poisoned, "yijin-west")
        assert {zone.id: rollup.occupancy(zone.id) for zone in SITE.zones} == before
    apply(rollup, gate.window(T0 + timedelta(seconds=10), 3, 1))  # the next honest window counts as ever
    assert rollup.occupancy("yijin") == 10


def test_a_long_gap_allows_what_the_entrance_could_pass_meanwhile() -> None:
    """An hour without windows (lost at an outbox bound, say): its crowd arrives with the next one."""
    rollup = RollUp(SITE)
    gate = Device("cam-yijin-west", "gate")
    apply(rollup, gate.window(T0, 10, 0))
    gate.total_in += 30_000  # an hour of a busy gate whose windows never arrived
    apply(rollup, gate.window(T0 + timedelta(hours=1), 5, 0))
    assert rollup.occupancy("yijin") == 30_015


def test_totals_going_back_within_one_boot_are_refused() -> None:
    rollup = RollUp(SITE)
    gate = Device("cam-wenru-west", "gate")
    apply(rollup, gate.window(T0, 50, 0))
    with pytest.raises(ImplausibleTotalsError, match="went back"):
        rollup.apply(jumped(gate.window(T0 + timedelta(seconds=5), 1, 0), total_in=1), "wenru-west")
    assert rollup.occupancy("wenru") == 50


def test_a_counter_that_really_moved_on_is_followed_from_its_second_window() -> None:
    """One window whose totals jump is refused; when the next agrees with it, the counter moved on for good
    (a bug, a restored backup): it is followed from there, taking only that window's own counts."""
    rollup = RollUp(SITE)
    gate = Device("cam-wenru-west", "gate")
    apply(rollup, gate.window(T0, 40, 0))
    gate.total_in += 50_000
    with pytest.raises(ImplausibleTotalsError):
        apply(rollup, gate.window(T0 + timedelta(seconds=5), 2, 0))
    apply(rollup, gate.window(T0 + timedelta(seconds=10), 3, 1))
    assert rollup.occupancy("wenru") == 40 + 3 - 1
    apply(rollup, gate.window(T0 + timedelta(seconds=15), 4, 0))
    assert rollup.occupancy("wenru") == 46


def test_a_new_boot_with_totals_out_of_reach_is_a_new_counter() -> None:
    """A replaced device or one that lost its state, now at 2^53 - 1: only its window's own counts move the zone."""
    rollup = RollUp(SITE)
    old = Device("cam-ta-east", "gate")
    apply(rollup, old.window(T0, 50, 10))
    new = Device("cam-ta-east", "gate")
    new.total_in = c.MAX_TOTAL - 100
    apply(rollup, new.window(T0 + timedelta(seconds=5), 5, 1))
    assert rollup.occupancy("alleys-north") == 44
    apply(rollup, new.window(T0 + timedelta(seconds=10), 2, 0))
    assert rollup.occupancy("alleys-north") == 46


def test_a_rebooted_device_continues_its_totals() -> None:
    """The agent keeps its totals across reboots: the windows lost around a reboot are made up."""
    rollup = RollUp(SITE)
    gate = Device("cam-gong-east", "gate")
    apply(rollup, gate.window(T0, 20, 0))
    gate.window(T0 + timedelta(seconds=5), 7, 0)  # lost as the device went down
    gate.boot = uuid.uuid4().hex
    apply(rollup, gate.window(T0 + timedelta(minutes=2), 3, 0))
    assert rollup.occupancy("alleys-south") == 30


def test_dedupe_memory_is_bounded_whatever_a_device_sends() -> None:
    dedup = Dedup()
    for _ in range(1000):  # a new boot id every message
        assert not dedup.seen("cam-yijin-west", uuid.uuid4().hex, 0)
    boot = uuid.uuid4().hex
    for seq in range(0, 100_000, 2):  # every other seq: nothing ever becomes contiguous
        dedup.seen("cam-yijin-west", boot, seq)
    boots = dedup._seen["cam-yijin-west"]
    assert len(boots) <= Dedup.BOOTS
    assert all(len(above) <= Dedup.ABOVE for _mark, above in boots.values())
    assert dedup.seen("cam-yijin-west", boot, 99_998)  # what it holds it still recognises
    honest = uuid.uuid4().hex
    assert [dedup.seen("cam-wenru-west", honest, s) for s in (0, 1, 1, 2, 0)] == [False, False, True, False, True]
