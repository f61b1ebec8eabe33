"""``lanewatch agent tally``: a line's counting rates, measured against the technician's hand count while
the agent counts as usual.

The technician stands at the entrance and presses a key for every person crossing the line (``i`` going
in, ``o`` going out); the running agent's totals over the same time are the device's count (committed to
its outbox with every window, read here without disturbing it). Their ratio is the line's rate, the one
thing the nights cannot learn: what the site inventory's ``lines[].measured`` takes. No picture is taken:
the camera stays the agent's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


class TotalsError(Exception):
    """The agent has not counted on this device yet (or its state is elsewhere)."""


def read_totals(state_dir: Path, line: str) -> tuple[int, int]:
    """The line's totals (in, out) as the running agent last committed them."""
    path = state_dir / "outbox.db"
    if not path.exists():
        raise TotalsError(
            f"no agent state in {state_dir}: is the agent running here (systemctl status lanewatch-agent)?"
        )
    db = sqlite3.connect(str(path), timeout=10)
    try:
        db.execute("PRAGMA query_only = ON")
        keys = (f"total.{line}.in", f"total.{line}.out")
        found = dict(db.execute("SELECT key, value FROM state WHERE key IN (?, ?)", keys).fetchall())
    except sqlite3.Error as exc:
        raise TotalsError(f"cannot read the agent's state in {path}: {exc}") from None
    finally:
        db.close()
    if not found:
        raise TotalsError(f"the agent has not counted on line {line!r} yet: is it running with this configuration?")
    return int(found.get(keys[0], 0)), int(found.get(keys[1], 0))


def accuracy(predicted: int, true: int) -> float:
    """How close a count is to the truth: smaller over larger (1.0 when both are 0)."""
    return 1.0 if predicted == true else min(predicted, true) / max(predicted, true)


def compare(counted_in: int, counted_out: int, truth: dict[str, int]) -> dict[str, Any]:
    """The counts against the truth: ``accuracy`` per direction; and, when the truth has people both ways,
    ``measured``: the line's rates, as the site inventory takes them (``lines[].measured``) so that the
    drift correction starts from them."""
    counted = {"in": counted_in, "out": counted_out}
    result: dict[str, Any] = {"gt": truth, "accuracy": {d: round(accuracy(counted[d], truth[d]), 4) for d in counted}}
    if min(truth.values()) > 0:
        result["measured"] = {
            "rate_in": round(counted_in / truth["in"], 3),
            "rate_out": round(counted_out / truth["out"], 3),
            "crossings": min(truth.values()),
        }
    return result
