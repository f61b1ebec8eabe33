"""``lanewatch agent calibrate``: what the device will count, drawn on what its camera sees now, for placing
the camera and checking the lines.

A second or two of frames goes through the same detector and tracker as counting: the picture shows the
people tracked in the last frame (one box each, with its track number and the path its feet took), not
the detector's raw, overlapping boxes; the counting lines with their names and the zone ``in`` leads into;
the region of interest; and a header naming the device, its entrance, the model and the time.

The only place besides ``agent eval`` where LaneWatch handles a picture on purpose: it is drawn for
the technician and written to a local file, never sent anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.counting import CountingLine, RegionOfInterest, reference_points
from edge_agent.detector import Detector
from edge_agent.pipeline import Pipeline
from edge_agent.tracker import smoothed_boxes

# BGR; chosen to stay apart from each other and readable on daylight scenes
LINE_COLOUR, IN_COLOUR, ROI_COLOUR, PERSON_COLOUR = (0, 200, 255), (0, 220, 0), (255, 160, 0), (255, 0, 255)
INK, PAPER = (255, 255, 255), (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def calibration_image(config: AgentConfig, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """The last of ``frames`` with what counting sees; and how many people are tracked in it."""
    frame = frames[-1]
    height, width = frame.shape[:2]
    scale = max(min(width, height) / 720, 0.5)  # text and strokes readable on 480p and 4K alike
    detector = Detector(str(config.model), num_threads=config.threads, model_format=config.model_format)
    lines = [
        CountingLine(spec.name, (spec.start[0] * width, spec.start[1] * height),
                     (spec.end[0] * width, spec.end[1] * height), anchor=config.anchor)
        for spec in config.lines
    ]  # fmt: skip
    roi = RegionOfInterest([(x * width, y * height) for x, y in config.roi]) if config.roi else None
    pipeline = Pipeline(detector, lines, roi=roi, anchor=config.anchor)
    paths: dict[int, list[tuple[int, int]]] = {}
    people: list[tuple[int, np.ndarray]] = []
    for number, image in enumerate(frames, start=1):
        pipeline.process(image, number)
        tracks = [t for t in pipeline.tracker.tracks if t.last_frame == pipeline.tracker.frame]
        boxes = smoothed_boxes(tracks)
        points = reference_points(boxes, config.anchor) if len(tracks) else np.empty((0, 2))
        for track, point in zip(tracks, points):
            paths.setdefault(track.id, []).append(_point(point))
        people = [(t.id, box) for t, box in zip(tracks, boxes) if t.confirmed]

    picture = frame.copy()
    thick = max(round(2 * scale), 1)
    if config.roi:
        polygon = np.array([[x * width, y * height] for x, y in config.roi], np.int32)
        cv2.polylines(picture, [polygon], True, ROI_COLOUR, thick)
        _label(picture, "counting area", _point(polygon[0]), ROI_COLOUR, scale)
    for track_id, box in people:
        x1, y1, x2, y2 = (int(v) for v in box)
        path = paths.get(track_id, [])
        if len(path) > 1:
            cv2.polylines(picture, [np.array(path, np.int32)], False, PERSON_COLOUR, thick)
        cv2.rectangle(picture, (x1, y1), (x2, y2), PERSON_COLOUR, thick)
        _label(picture, f"#{track_id}", (x1, y1), PERSON_COLOUR, scale * 0.8)
    for spec in config.lines:
        start = np.array([spec.start[0] * width, spec.start[1] * height])
        end = np.array([spec.end[0] * width, spec.end[1] * height])
        cv2.line(picture, _point(start), _point(end), LINE_COLOUR, thick + 1)
        middle, along = (start + end) / 2, end - start
        normal = np.array([along[1], -along[0]]) / max(float(np.hypot(*along)), 1e-6)  # the 'in' direction
        tip = middle + normal * 0.1 * min(width, height)
        cv2.arrowedLine(picture, _point(middle), _point(tip), IN_COLOUR, thick + 1, tipLength=0.3)
        into = f"in -> {config.into}" if config.into else "in"
        _label(picture, f"{spec.name}: {into}", _point(tip + normal * 8), IN_COLOUR, scale)
    header = (f"{config.device} at {config.entrance} | {len(people)} people tracked | "
              f"{Path(str(config.model)).name} | {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")  # fmt: skip
    _label(picture, header, (0, 0), INK, scale, anchor_top=True)
    return picture, len(people)


def write_png(picture: np.ndarray, out: Path) -> None:
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: the calibration picture is written as PNG; name it *.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), picture):
        raise ValueError(f"{out}: could not be written")


def _label(
    picture: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int], scale: float,
    anchor_top: bool = False,
) -> None:  # fmt: skip
    """Text on a dark plate with a coloured edge: readable on any scene, and kept inside the picture."""
    size = 0.55 * scale
    weight = max(round(1.5 * scale), 1)
    (w, h), base = cv2.getTextSize(text, FONT, size, weight)
    pad = max(int(4 * scale), 2)
    x = min(max(at[0], 0), max(picture.shape[1] - w - 2 * pad, 0))
    y = at[1] if anchor_top else at[1] - h - base - 2 * pad
    y = min(max(y, 0), max(picture.shape[0] - h - base - 2 * pad, 0))
    cv2.rectangle(picture, (x, y), (x + w + 2 * pad, y + h + base + 2 * pad), PAPER, -1)
    cv2.rectangle(picture, (x, y), (x + w + 2 * pad, y + h + base + 2 * pad), colour, 1)
    cv2.putText(picture, text, (x + pad, y + pad + h), FONT, size, INK, weight, cv2.LINE_AA)


def _point(p: np.ndarray) -> tuple[int, int]:
    return int(np.rint(p[0])), int(np.rint(p[1]))
