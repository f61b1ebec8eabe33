"""Counting accuracy on footage nobody tuned on: PETS 2009 S2.L1, counted by hand.

PETS 2009 S2.L1 (view 1, 795 frames, 768 x 576; MOT15's PETS09-S2L1) is the pedestrian clip OpenCV
ships as ``vtest.avi``, which Debian packages in ``opencv-doc``: eight people walk across a campus
road in every direction, alone, in pairs and in groups, past a lamp post and a sign. Two vertical
lines were counted by hand, frame by frame, each crossing with its frame and direction (``TRUTH``):

- x = 576 px, the whole clip. Counted after the tracker was last changed: this line is unseen.
- x = 384 px, frames 146 - 795. For frames 1 - 145 a group stands talking on this line, and on
  which side each one's feet are cannot be told by eye. The crossing it shows that both models
  missed (two people walking side by side, frame 531) led to ``Track.origin``: tuned on.

Prints, per model and line, the crossings counted right (matched to a true one of the same
direction within ``SLACK`` frames), missed and extra, and the accuracy ``lanewatch agent eval``
reports (smaller count over larger), per line and pooled (sum of the smaller over sum of the larger).

    apt-get install opencv-doc   # or: apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb DIR
    .venv/bin/python bench/counting_unseen.py [--video .../vtest.avi] [--assets ../shared/assets] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from edge_agent.counting import CountingLine
from edge_agent.detector import Detector
from edge_agent.pipeline import Pipeline
from edge_agent.sources import open_source

VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
MODELS = {
    "ssd_mobilenet_v1": "ssd_mobilenet_v1_coco_quant/detect.tflite",
    "yolov8n": "yolov8n_coco/yolov8n_full_integer_quant.tflite",
}
HEIGHT = 576
SLACK = 8  # frames between a counted crossing and the hand-counted one it matches
# line x (drawn top to bottom: "in" is left to right) -> first frame counted, true crossing frames
TRUTH: dict[int, tuple[int, dict[str, list[int]]]] = {
    576: (
        1,
        {
            "in": [116, 123, 128, 178, 192, 366, 381, 388, 477, 500, 612, 724, 733, 739, 780],
            "out": [10, 44, 51, 136, 155, 187, 224, 249, 258, 416, 451, 501, 518, 518, 600, 629, 671, 673, 721, 741],
        },
    ),
    384: (
        146,
        {
            "in": [311, 331, 347, 349, 463, 593, 612, 678, 702, 747, 785, 792],
            "out": [159, 178, 219, 252, 278, 288, 361, 487, 531, 531, 563, 630, 641, 688, 708, 750, 775],
        },
    ),
}


def counted(video: Path, model: Path) -> dict[int, dict[str, list[int]]]:
    """The frames of the crossings the pipeline counts on each line, per direction."""
    lines = {x: CountingLine(f"x={x}", (x, 0), (x, HEIGHT)) for x in TRUTH}
    found: dict[int, dict[str, list[int]]] = {x: {"in": [], "out": []} for x in TRUTH}
    pipeline = Pipeline(Detector(str(model), num_threads=2), list(lines.values()))
    with open_source(str(video)) as source:
        for index, counts in pipeline.run(source):
            for crossing in counts.crossings:
                x = int(crossing.line.removeprefix("x="))
                if index + 1 >= TRUTH[x][0]:
                    found[x][crossing.direction].append(index + 1)
    return found


def matched(true: list[int], got: list[int]) -> int:
    """How many counted crossings match a true one within SLACK frames, each used once."""
    left, right = sorted(true), 0
    for frame in sorted(got):
        near = [t for t in left if abs(t - frame) <= SLACK]
        if near:
            left.remove(min(near, key=lambda t: abs(t - frame)))
            right += 1
    return right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=VIDEO, help="vtest.avi (default: where opencv-doc puts it)")
    parser.add_argument("--assets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "assets")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"{args.video} not found: apt-get install opencv-doc, or pass --video PATH to vtest.avi")
    say: Callable[[str], None] = (lambda _: None) if args.json else print
    summary: dict[str, dict] = {}
    for name, model in MODELS.items():
        found = counted(args.video, args.assets / "models" / model)
        rows: dict[str, dict] = {}
        pooled = {d: {"smaller": 0, "larger": 0} for d in ("in", "out")}
        for x, (first, true) in TRUTH.items():
            row = {}
            for d in ("in", "out"):
                t, g = len(true[d]), len(found[x][d])
                right = matched(true[d], found[x][d])
                row[d] = {"true": t, "counted": g, "right": right, "missed": t - right, "extra": g - right,
                          "eval": round(min(t, g) / max(t, g, 1), 3)}  # fmt: skip
                pooled[d]["smaller"] += min(t, g)
                pooled[d]["larger"] += max(t, g)
            rows[f"x={x}"] = row
            say(
                f"{name:16} x={x} from frame {first:<3}  "
                + "  ".join(
                    f"{d} {c['counted']} counted / {c['true']} true: {c['right']} right, {c['missed']} missed,"
                    f" {c['extra']} extra; eval {c['eval']:.3f}"
                    for d, c in row.items()
                )
            )
        total = {d: round(p["smaller"] / max(p["larger"], 1), 3) for d, p in pooled.items()}
        say(f"{name:16} pooled eval      in {total['in']:.3f}  out {total['out']:.3f}\n")
        summary[name] = {"lines": rows, "pooled_eval": total}
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
