"""Counting lines: a tracked person counts once each time they cross, in a direction.

Direction: for a line from (x1, y1) to (x2, y2) in image pixels (y down), ``in`` is motion along
(y2 - y1, -(x2 - x1)). A hysteresis band on both sides of the line makes a box that jitters on the
line count nothing: a person must be seen clearly on one side, then clearly on the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

import cv2
import numpy as np

Anchor = Literal["foot", "center"]


def reference_points(boxes: np.ndarray, anchor: Anchor) -> np.ndarray:
    """The point of each box that must cross: bottom centre (feet) or the box centre."""
    points = np.empty((len(boxes), 2))
    points[:, 0] = (boxes[:, 0] + boxes[:, 2]) / 2
    points[:, 1] = boxes[:, 3] if anchor == "foot" else (boxes[:, 1] + boxes[:, 3]) / 2
    return points


@dataclass(frozen=True)
class Crossing:
    line: str
    track_id: int
    direction: Literal["in", "out"]
    frame: int


@dataclass
class CountingLine:
    """One named line in frame pixels, with its hysteresis band.

    ``band`` is the half-width in pixels; ``band_fraction`` of each person's box height is used
    instead when larger, so the band scales with how big people look (and how much their boxes
    jitter). ``margin`` lets a crossing count slightly beyond the segment's ends.
    """

    name: str
    start: tuple[float, float]
    end: tuple[float, float]
    anchor: Anchor = "foot"
    band: float = 2.0
    band_fraction: float = 0.02
    margin: float = 0.05
    totals: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    _sides: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        (x1, y1), (x2, y2) = self.start, self.end
        length = float(np.hypot(x2 - x1, y2 - y1))
        if length == 0:
            raise ValueError(f"counting line {self.name!r} has zero length")
        self._origin = np.array([x1, y1], dtype=np.float64)
        self._along = np.array([x2 - x1, y2 - y1]) / length  # unit vector along the line
        self._normal = np.array([y2 - y1, -(x2 - x1)]) / length  # unit vector pointing "in"
        self._length = length

    def update(self, track_ids: Sequence[int], boxes: np.ndarray, frame: int) -> list[Crossing]:
        """Feed the tracks seen in one frame; return the crossings they completed."""
        if not len(track_ids):
            return []
        offsets = reference_points(boxes, self.anchor) - self._origin
        distance = offsets @ self._normal
        position = (offsets @ self._along) / self._length
        band = np.maximum(self.band, self.band_fraction * (boxes[:, 3] - boxes[:, 1]))
        crossings = []
        for track_id, d, t, b in zip(track_ids, distance, position, band):
            side = 1 if d > b else -1 if d < -b else 0
            if side == 0:
                continue  # inside the band: wait until the person is clearly on one side
            previous = self._sides.get(track_id)
            self._sides[track_id] = side
            if previous == -side and -self.margin <= t <= 1 + self.margin:
                direction: Literal["in", "out"] = "in" if side > 0 else "out"
                self.totals[direction] += 1
                crossings.append(Crossing(self.name, int(track_id), direction, frame))
        return crossings

    def forget(self, live_ids: Iterable[int]) -> None:
        """Drop the state of tracks the tracker no longer keeps (bounded memory on a long run)."""
        live = set(live_ids)
        for track_id in [t for t in self._sides if t not in live]:
            del self._sides[track_id]


class RegionOfInterest:
    """A polygon in frame pixels: people outside it are ignored, people inside are 'in view'."""

    def __init__(self, polygon: Sequence[tuple[float, float]]) -> None:
        if len(polygon) < 3:
            raise ValueError("a region of interest needs at least 3 points")
        self.polygon = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)

    def contains(self, points: np.ndarray) -> np.ndarray:
        return np.array([cv2.pointPolygonTest(self.polygon, (float(x), float(y)), False) >= 0 for x, y in points], bool)


def in_view(boxes: np.ndarray, anchor: Anchor, roi: Optional[RegionOfInterest]) -> int:
    """People whose reference point is inside the region of interest (everyone in the picture
    without one)."""
    return len(boxes) if roi is None else int(roi.contains(reference_points(boxes, anchor)).sum())
