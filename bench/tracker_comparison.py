"""Why the tracker is written here: it against the trackers a user would reach for, on the same
detections, for counting accuracy and cost a frame.

Each detection model runs once over the accuracy bench's footage (every vertical line on the TUD
clips, as they are, mirrored, at 12.5, 8.3 and 5 fps and at half size); then every tracker follows
the same detections, its tracks cross the same counting lines, and the counts are scored against
the same ground truth (``bench/counting_accuracy.py``). Compared: roboflow ``trackers`` (ByteTrack
and OC-SORT, with their defaults and with this project's score and overlap thresholds).
``trackers`` needs Python 3.10+ and brings supervision, SciPy and a second OpenCV, so it is not a
project dependency; run this in a virtual environment of its own:

    python3 -m venv /tmp/compare && /tmp/compare/bin/pip install -e '.[edge]' 'trackers>=2.6'
    /tmp/compare/bin/python bench/tracker_comparison.py [--assets ../shared/assets]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from harness.assets import assets_folder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from counting_accuracy import CLIPS, KEYS, MODELS, VARIANTS, describe, frames, lines, score, truth

from edge_agent.detector import Detector
from edge_agent.tracker import ByteTracker, smoothed_boxes

Step = Callable[[np.ndarray, np.ndarray], tuple[list[int], np.ndarray]]  # detections -> (ids, boxes)


def lanewatch(fps: float) -> Step:
    tracker = ByteTracker()

    def step(boxes: np.ndarray, scores: np.ndarray) -> tuple[list[int], np.ndarray]:
        tracks = tracker.update(boxes, scores)
        return [t.id for t in tracks], smoothed_boxes(tracks)

    return step


def roboflow(kind: str, **settings: float) -> Callable[[float], Step]:
    def make(fps: float) -> Step:
        import supervision as sv
        import trackers

        tracker = getattr(trackers, kind)(frame_rate=fps, **settings)

        def step(boxes: np.ndarray, scores: np.ndarray) -> tuple[list[int], np.ndarray]:
            found = sv.Detections(xyxy=boxes.astype(np.float32), confidence=scores.astype(np.float32),
                                  class_id=np.zeros(len(scores), int))  # fmt: skip
            tracked = tracker.update(found)
            shown = tracked.tracker_id >= 0  # -1: not yet activated
            return tracked.tracker_id[shown].tolist(), tracked.xyxy[shown].astype(np.float64)

        return step

    return make


OURS = {"high_conf_det_threshold": 0.5, "minimum_consecutive_frames": 1, "minimum_iou_threshold": 0.2}
TRACKERS: dict[str, Callable[[float], Step]] = {
    "lanewatch (edge_agent/tracker.py)": lanewatch,
    "trackers ByteTrack, defaults": roboflow("ByteTrackTracker"),
    "trackers ByteTrack, our thresholds": roboflow("ByteTrackTracker", track_activation_threshold=0.6, **OURS),
    "trackers OC-SORT, defaults": roboflow("OCSORTTracker"),
    "trackers OC-SORT, our thresholds": roboflow("OCSORTTracker", **OURS),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=assets_folder())
    args = parser.parse_args()
    for model, path in MODELS.items():
        detector = Detector(str(args.assets / "models" / path))
        detector.score_threshold = 0.1  # the weak detections too: ByteTrack-style trackers use them
        footage = {}
        for variant in VARIANTS:
            for clip in CLIPS:
                found = []
                for frame in frames(args.assets / "videos" / clip / f"{clip}.mp4", variant):
                    prepared = detector.preprocess(frame.image)
                    detector.invoke(prepared.tensor)
                    result = detector.decode(prepared.transform)
                    found.append((result.boxes.copy(), result.scores.copy()))
                footage[variant, clip] = (found, truth(args.assets / "videos" / clip / "gt" / "gt.txt", variant))
        for name, make in TRACKERS.items():
            tally = {d: dict.fromkeys(KEYS, 0) for d in ("in", "out")}
            costs = []
            for (variant, _), (found, true) in footage.items():
                counters, step, spent = lines(variant, band=True), make(25 / variant.step), 0.0
                for number, (boxes, scores) in enumerate(found, start=1):
                    started = time.perf_counter()
                    ids, tracked = step(boxes, scores)
                    spent += time.perf_counter() - started
                    for counter in counters:
                        counter.update(ids, tracked, number)
                costs.append(1000 * spent / len(found))
                score(tally, true, [counter.totals for counter in counters])
            print(f"{model:16} {name:35} {describe(tally)}  {statistics.median(costs):.2f} ms a frame")
        print()


if __name__ == "__main__":
    main()
