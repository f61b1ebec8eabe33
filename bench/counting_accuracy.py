"""Counting accuracy beyond the lines the asset README documents: every vertical line across the TUD
clips, truth derived from their gt.txt, for each model. A proxy for footage nobody tuned on.

    .venv/bin/python bench/counting_accuracy.py [--assets ../shared/assets] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_agent.evaluation import evaluate

MODELS = {
    "ssd_mobilenet_v1": "ssd_mobilenet_v1_coco_quant/detect.tflite",
    "yolov8n": "yolov8n_coco/yolov8n_full_integer_quant.tflite",
}
CLIPS = ("TUD-Campus", "TUD-Stadtmitte")
XS = (160, 240, 320, 400, 480)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "assets")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary = {}
    for name, model in MODELS.items():
        right = wrong_extra = truth_total = 0
        rows = []
        for clip in CLIPS:
            folder = args.assets / "videos" / clip
            for x in XS:
                r = evaluate(str(folder / f"{clip}.mp4"), str(args.assets / "models" / model), (x, 0, x, 480),
                             "foot", folder / "gt" / "gt.txt")  # fmt: skip
                for direction in ("in", "out"):
                    true, got = r["gt"][direction], r[direction]
                    right += min(true, got)
                    wrong_extra += max(0, got - true)
                    truth_total += true
                rows.append((clip, x, r["in"], r["out"], r["gt"]["in"], r["gt"]["out"]))
                if not args.json:
                    counted, true = f"{r['in']}/{r['out']}", f"{r['gt']['in']}/{r['gt']['out']}"
                    print(f"{name:18} {clip:15} x={x:<4} counted {counted}  true {true}")
        summary[name] = {"true_crossings": truth_total, "counted_right": right, "extra": wrong_extra,
                         "recall": round(right / truth_total, 3), "lines": rows}  # fmt: skip
        if not args.json:
            share = right / truth_total
            print(f"{name}: {right} of {truth_total} true crossings counted ({share:.1%}), {wrong_extra} extra\n")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
