"""``lanewatch agent calibrate``: one frame with what the device will count, for placing the camera.

The only place besides ``agent eval`` where LaneWatch handles a picture on purpose: it is drawn for
the technician and written to a local file, never sent anywhere.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.config import AgentConfig
from edge_agent.detector import Detector

LINE_COLOUR, IN_COLOUR, ROI_COLOUR, BOX_COLOUR = (0, 200, 255), (0, 220, 0), (255, 160, 0), (60, 60, 255)


def calibration_image(config: AgentConfig, frame: np.ndarray) -> tuple[np.ndarray, int]:
    """The frame with ROI, counting lines, their 'in' arrows and the current detections; and how many."""
    height, width = frame.shape[:2]
    picture = frame.copy()
    if config.roi:
        polygon = np.array([[x * width, y * height] for x, y in config.roi], np.int32)
        cv2.polylines(picture, [polygon], True, ROI_COLOUR, 2)
    for line in config.lines:
        start = np.array([line.start[0] * width, line.start[1] * height])
        end = np.array([line.end[0] * width, line.end[1] * height])
        cv2.line(picture, _point(start), _point(end), LINE_COLOUR, 3)
        middle, along = (start + end) / 2, end - start
        normal = np.array([along[1], -along[0]]) / max(float(np.hypot(*along)), 1e-6)  # the 'in' direction
        tip = middle + normal * 0.08 * min(width, height)
        cv2.arrowedLine(picture, _point(middle), _point(tip), IN_COLOUR, 3, tipLength=0.3)
        cv2.putText(picture, f"{line.name}: in", _point(tip + normal * 12), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    IN_COLOUR, 2)  # fmt: skip
    detector = Detector(str(config.model), num_threads=config.threads, model_format=config.model_format)
    found = detector.detect(frame)
    for box, score in zip(found.boxes, found.scores):
        x1, y1, x2, y2 = (int(v) for v in box)
        cv2.rectangle(picture, (x1, y1), (x2, y2), BOX_COLOUR, 2)
        foot = (x1 + x2) // 2, y2 if config.anchor == "foot" else (y1 + y2) // 2
        cv2.circle(picture, foot, 4, BOX_COLOUR, -1)
        cv2.putText(picture, f"{score:.2f}", (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_COLOUR, 1)
    return picture, len(found)


def write_png(picture: np.ndarray, out: Path) -> None:
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: the calibration picture is written as PNG; name it *.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), picture):
        raise ValueError(f"{out}: could not be written")


def _point(p: np.ndarray) -> tuple[int, int]:
    return int(np.rint(p[0])), int(np.rint(p[1]))
