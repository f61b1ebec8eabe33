"""Counting accuracy on footage nobody tuned on: PETS 2009 S2.L1, counted by hand.

PETS 2009 S2.L1 (view 1, 795 frames, 768 x 576; MOT15's PETS09-S2L1) is the pedestrian clip OpenCV
ships as ``vtest.avi``, which Debian packages in ``opencv-doc`` (``scripts/fetch-footage`` takes it
out): eight people walk across a campus road in every direction, alone, in pairs and in groups,
past a lamp post and a sign. Three vertical lines were counted by hand, frame by frame, each
crossing with its frame and direction (``pets2009_s2l1_counts.json``), leaving out the frames
where people stand on a line, or walk up to it and turn back, so that which side their feet are on
cannot be told by eye:

- x = 576 px, the whole clip, and x = 192 px, but for frames 540 - 595 (two people walk up to the
  line and turn back, their feet 0 - 4 px past it). Counted after the tracker was last changed:
  these lines are unseen.
- x = 384 px, but for frames 1 - 145 (a group stands talking on the line). The crossing it shows
  that both models missed (two people walking side by side, frame 531) led to ``Track.origin``:
  tuned on.

Prints, per model and line, the crossings counted right (matched to a true one of the same
direction within ``SLACK`` frames), missed and extra, and the accuracy ``lanewatch agent eval``
reports (smaller count over larger), per line and pooled (sum of the smaller over sum of the larger).

    scripts/fetch-footage
    .venv/bin/python bench/counting_unseen.py [--video .../vtest.avi] [--assets ../shared/assets] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Callable

from edge_agent.counting import CountingLine
from edge_agent.detector import Detector
from edge_agent.groundtruth import HandCounted, read_hand_counts
from edge_agent.pipeline import Pipeline
from edge_agent.sources import open_source
from harness.assets import assets_folder

FOOTAGE = Path(os.environ.get("LANEWATCH_FOOTAGE", Path.home() / ".cache" / "lanewatch"))
COUNTS = Path(__file__).with_name("pets2009_s2l1_counts.json")
MODELS = {
    "ssd_mobilenet_v1": "ssd_mobilenet_v1_coco_quant/detect.tflite",
    "yolov8n": "yolov8n_coco/yolov8n_full_integer_quant.tflite",
}
HEIGHT = 576
SLACK = 8  # frames between a counted crossing and the hand-counted one it matches


def counted(video: Path, model: Path, truth: list[HandCounted]) -> dict[int, dict[str, list[int]]]:
    """The frames of the crossings the pipeline counts on each line, per direction."""
    lines = {t.x: t for t in truth}
    found: dict[int, dict[str, list[int]]] = {x: {"in": [], "out": []} for x in lines}
    pipeline = Pipeline(Detector(str(model), num_threads=2), [CountingLine(f"{x}", (x, 0), (x, HEIGHT)) for x in lines])
    with open_source(str(video)) as source:
        for index, counts in pipeline.run(source):
            for crossing in counts.crossings:
                x = int(crossing.line)
                if lines[x].counts(index + 1):
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
    parser.add_argument(
        "--video", type=Path, default=FOOTAGE / "vtest.avi", help="default: where fetch-footage puts it"
    )
    parser.add_argument("--assets", type=Path, default=assets_folder())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"{args.video} not found: run scripts/fetch-footage, or pass --video PATH to vtest.avi")
    say: Callable[[str], None] = (lambda _: None) if args.json else print
    truth = read_hand_counts(COUNTS)
    summary: dict[str, dict] = {}
    for name, model in MODELS.items():
        found = counted(args.video, args.assets / "models" / model, truth)
        rows: dict[str, dict] = {}
        pooled = {d: {"smaller": 0, "larger": 0} for d in ("in", "out")}
        for line in truth:
            (first, last), x, row = line.skip, line.x, {}
            for d in ("in", "out"):
                t, g = len(line.crossings[d]), len(found[x][d])
                right = matched(line.crossings[d], found[x][d])
                row[d] = {"true": t, "counted": g, "right": right, "missed": t - right, "extra": g - right,
                          "eval": round(min(t, g) / max(t, g, 1), 3)}  # fmt: skip
                pooled[d]["smaller"] += min(t, g)
                pooled[d]["larger"] += max(t, g)
            rows[f"x={x}"] = row
            say(
                f"{name:16} x={x:<3} "
                + (f"but {first:>3} - {last:<3}  " if last else " " * 15)
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
