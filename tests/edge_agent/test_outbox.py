"""The device's outbox: nothing committed is lost, not even to kill -9, and the bounds say what they drop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_agent.outbox import MEMORY_IDS, Outbox
from tests.conftest import fill


def test_messages_come_back_in_order_until_acknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    ids = box.append([("t/a", b"1"), ("t/b", b"2"), ("t/c", b"3")])
    assert [e.payload for e in box.pending()] == [b"1", b"2", b"3"]
    box.remove(ids[:2])
    assert [(e.topic, e.payload) for e in box.pending()] == [("t/c", b"3")]
    assert box.depth() == 1


def test_what_was_stored_survives_a_restart_with_its_state(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    box.append([("t", b"window-1")], state={"totals.gate.in": "12", "seq": "1"})
    box.close()
    again = Outbox(tmp_path / "outbox.db")
    assert [e.payload for e in again.pending()] == [b"window-1"]
    assert again.state() == {"totals.gate.in": "12", "seq": "1"}


def test_the_oldest_are_dropped_beyond_the_size_bound_and_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_messages=5)
    for i in range(8):
        box.append([("t", str(i).encode())])
    assert [e.payload for e in box.pending()] == [b"3", b"4", b"5", b"6", b"7"]
    assert box.dropped() == 3
    box.close()
    assert Outbox(tmp_path / "outbox.db", max_messages=5).dropped() == 3  # the count is kept too


def test_messages_older_than_the_age_bound_are_dropped_and_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_age_s=0.2)
    box.append([("t", b"old-1"), ("t", b"old-2")])
    time.sleep(0.3)
    box.append([("t", b"new")])
    assert [e.payload for e in box.pending()] == [b"new"]
    assert box.dropped() == 2


def test_backlog_and_live_messages_are_interleaved_each_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    box.append([("t", f"backlog-{i}".encode()) for i in range(5)])
    live_from = box.last_id() + 1  # the moment the connection came back
    box.append([("t", f"live-{i}".encode()) for i in range(2)])
    order = [e.payload.decode() for e in box.schedule(live_from, limit=10)]
    assert order == ["backlog-0", "live-0", "backlog-1", "live-1", "backlog-2", "backlog-3", "backlog-4"]
    sent = [e.id for e in box.schedule(live_from, limit=2)]
    assert [e.payload.decode() for e in box.schedule(live_from, in_flight=sent, limit=2)] == ["backlog-1", "live-1"]


def test_bounds_must_leave_room() -> None:
    with pytest.raises(ValueError, match="at least one message"):
        Outbox(Path("/nonexistent/x.db"), max_messages=0)


WRITER = textwrap.dedent(
    """
    import sys
    from edge_agent.outbox import MEMORY_IDS, Outbox

    box = Outbox(sys.argv[1])
    total = int(box.state().get("total_in", "0"))
    seq = int(box.state().get("seq", "-1"))
    while True:
        seq += 1
        crossed = seq % 3
        total += crossed
        payload = f'{{"seq": {seq}, "in": {crossed}, "total_in": {total}}}'.encode()
        box.append([("lanewatch/v1/s/devices/d/counts/gate", payload)], state={"seq": str(seq), "total_in": str(total)})
        print(seq, flush=True)  # only after the commit
    """
)


def test_kill_9_mid_stream_loses_nothing_committed_and_totals_agree(tmp_path: Path) -> None:
    database = tmp_path / "outbox.db"
    last_reported = -1
    for _round in range(2):  # crash, restart, crash again: the totals continue
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(database)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None
        reported = []
        for line in writer.stdout:
            reported.append(int(line))
            if len(reported) == 300:
                break
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        # it resumed after the last committed window (the writer may commit a few more than we read
        # before the kill lands; the contiguity check below shows none was skipped)
        assert reported[0] > last_reported
        last_reported = reported[-1]

    box = Outbox(database)
    stored = [json.loads(e.payload) for e in box.pending(limit=10_000)]
    seqs = [m["seq"] for m in stored]
    assert seqs == list(range(len(seqs)))  # in order, no gap, nothing doubled
    assert seqs[-1] >= last_reported  # everything reported as committed is there
    assert all(m["total_in"] == sum(s % 3 for s in range(m["seq"] + 1)) for m in stored)
    state = box.state()
    assert int(state["seq"]) == seqs[-1]
    assert int(state["total_in"]) == stored[-1]["total_in"]


def test_on_a_full_disk_messages_wait_in_memory_bounded_and_counted(small_disk: Path) -> None:
    """A real full file system: appends go to memory (``full``), are sent from there, the oldest beyond the
    bound are dropped and counted; with space again, storing resumes and the drops are written down."""
    box = Outbox(small_disk / "outbox.db", max_unstored=5)
    box.append([("t/before", b"stored")])
    filler = fill(small_disk)
    made = 0
    while not box.full:  # SQLite fills its last free pages first
        box.append([("t/full", b"x" * 2000)])
        made += 1
        assert made < 5000, "the outbox never noticed the full disk"
    for n in range(7):
        box.append([("t/full", f"{n}".encode() * 100)], state={"total.gate.in": str(n)})
    assert box.full
    kept = [e for e in box.pending(0, 100) if e.topic == "t/full" and e.id >= MEMORY_IDS]
    assert len(kept) == 5  # the bound
    assert kept[-1].payload == b"6" * 100  # the newest kept, the oldest dropped
    assert box.dropped() == 1 + 7 - 5  # eight waited in memory, with room for five
    box.remove([kept[0].id])
    assert kept[0].id not in {e.id for e in box.pending(0, 100)}
    filler.unlink()
    box.append([("t/after", b"stored again")], state={"total.gate.in": "7"})
    assert not box.full
    assert box.state()["total.gate.in"] == "7"
    box.close()
    reopened = Outbox(small_disk / "outbox.db")
    assert reopened.dropped() == 3  # written down once there was space
    assert [e.topic for e in reopened.pending(0, 100)][-1] == "t/after"
    reopened.close()
