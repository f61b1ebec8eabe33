"""Ground truth from MOT Challenge annotations: the true crossings of a counting line.

``gt.txt`` rows are ``frame, id, left, top, width, height, conf`` and then, from MOT16 on (9
columns), ``class, visibility``; MOT15 (10 columns) has world coordinates there instead. Rows with
conf 0 are "ignore" regions, and where there is a class only 1 (pedestrian) counts. The true
crossings are what a counting line reports when fed the annotated tracks, so prediction and truth
follow one definition of a crossing.

Footage without annotations can have its crossings counted by hand instead (``HandCounted``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.counting import CountingLine

PEDESTRIAN = 1


def read_mot(path: Path) -> dict[int, tuple[list[int], np.ndarray]]:
    """Annotated boxes per 1-based frame: (track ids, boxes as x1, y1, x2, y2)."""
    frames: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = [float(v) for v in line.replace(" ", "").split(",")]
        if len(fields) < 6:
            raise ValueError(f"{path}:{number}: expected at least 6 comma-separated values, got {len(fields)}")
        frame, track, left, top, width, height = fields[:6]
        conf = fields[6] if len(fields) > 6 else 1
        kind = fields[7] if len(fields) == 9 else PEDESTRIAN
        if conf == 0 or kind != PEDESTRIAN:
            continue
        frames[int(frame)].append((int(track), [left, top, left + width, top + height]))
    return {f: ([t for t, _ in rows], np.array([b for _, b in rows], np.float64)) for f, rows in sorted(frames.items())}


def true_crossings(path: Path, line: CountingLine) -> dict[str, int]:
    """Crossings of ``line`` by the annotated tracks ({"in": n, "out": n})."""
    for frame, (ids, boxes) in read_mot(path).items():
        line.update(ids, boxes, frame)
    return dict(line.totals)


@dataclass(frozen=True)
class HandCounted:
    """One vertical line's crossings counted by hand: x (drawn top to bottom, so "in" is left to
    right), the frames left out (first, last; 0, 0 for none: where no eye can tell a side), and the
    1-based frames of the crossings per direction."""

    x: int
    skip: tuple[int, int]
    crossings: dict[str, list[int]]

    def counts(self, frame: int) -> bool:
        """Whether a crossing at this frame is compared with the truth (not left out)."""
        return not self.skip[0] <= frame <= self.skip[1]


def read_hand_counts(path: Path) -> list[HandCounted]:
    """The lines of a hand-count file: ``{"lines": {"X": {"skip": [first, last], "in": [...], "out": [...]}}}``."""
    lines = json.loads(Path(path).read_text())["lines"]
    return [
        HandCounted(int(x), (line["skip"][0], line["skip"][1]), {d: line[d] for d in ("in", "out")})
        for x, line in lines.items()
    ]
