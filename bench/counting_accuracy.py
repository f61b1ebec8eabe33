"""Counting accuracy beyond the lines the asset README documents, a proxy for footage nobody tuned on.

Every vertical line across the TUD clips (x = 80 to 560 px, every 40 px), with the truth derived from
their gt.txt, and the same footage changed the ways other sites differ: mirrored (people walk the
other way), at a half, a third and a fifth of the frame rate (12.5, 8.3 and 5 fps: cheaper cameras,
or a device that keeps up by skipping frames, as a Pi 4 running YOLOv8n does), and at half the size
(people 60-100 px tall: a wider view). The ground truth is changed the same way. Prints, per model,
how many true crossings of each direction were counted and how many counts were extra, per variant
and in all; and "eval", the accuracy ``lanewatch agent eval`` reports for one line (the smaller of
counted and true over the larger), pooled over the lines: the sum of the smaller over the sum of the
larger, which is the crossings counted right over the true crossings plus the extra counts.

    .venv/bin/python bench/counting_accuracy.py [--assets ../shared/assets] [--json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge_agent.counting import CountingLine
from edge_agent.detector import Detector
from edge_agent.groundtruth import read_mot
from edge_agent.pipeline import Pipeline
from edge_agent.sources import Frame, open_source
from harness.assets import assets_folder

MODELS = {
    "ssd_mobilenet_v1": "ssd_mobilenet_v1_coco_quant/detect.tflite",
    "yolov8n": "yolov8n_coco/yolov8n_full_integer_quant.tflite",
}
CLIPS = ("TUD-Campus", "TUD-Stadtmitte")
XS = tuple(range(80, 600, 40))
WIDTH, HEIGHT = 640, 480
KEYS = ("true", "right", "extra")  # true crossings; of them, counted; counts beyond the truth


@dataclass(frozen=True)
class Variant:
    """A way other footage differs: which frames are kept, and how each image and box changes."""

    name: str
    step: int = 1  # keep every step-th frame
    mirror: bool = False
    scale: float = 1.0

    def image(self, image: np.ndarray) -> np.ndarray:
        if self.mirror:
            image = image[:, ::-1].copy()
        if self.scale != 1.0:
            image = cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        return image

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        out = boxes.copy()
        if self.mirror:
            out[:, [0, 2]] = WIDTH - boxes[:, [2, 0]]
        return out * self.scale

    def x(self, x: float) -> float:
        return (WIDTH - x if self.mirror else x) * self.scale


VARIANTS = (
    Variant("original"),
    Variant("mirrored", mirror=True),
    Variant("12.5 fps", step=2),
    Variant("8.3 fps", step=3),
    Variant("5 fps", step=5),
    Variant("half size", scale=0.5),
)


def lines(variant: Variant, band: bool) -> list[CountingLine]:
    """The vertical lines, drawn so that ``in`` is left to right in the original footage."""
    height = HEIGHT * variant.scale
    out = []
    for x in XS:
        top, bottom = (variant.x(x), 0.0), (variant.x(x), height)
        start, end = (bottom, top) if variant.mirror else (top, bottom)
        line = CountingLine(f"x={x}", start, end)
        if not band:
            line.band = line.band_fraction = 0.0
        out.append(line)
    return out


def truth(gt: Path, variant: Variant) -> list[dict[str, int]]:
    """The README's definition: the annotated foot point changes side (no band)."""
    counters = lines(variant, band=False)
    kept = [rows for frame, rows in read_mot(gt).items() if (frame - 1) % variant.step == 0]
    for number, (ids, boxes) in enumerate(kept, start=1):
        for counter in counters:
            counter.update(ids, variant.boxes(boxes), number)
    return [dict(c.totals) for c in counters]


def frames(video: Path, variant: Variant) -> Iterator[Frame]:
    with open_source(str(video)) as source:
        kept = 0
        for frame in source:
            if frame.index % variant.step == 0:
                yield Frame(kept, frame.time, variant.image(frame.image))
                kept += 1


def counted(video: Path, model: Path, variant: Variant) -> list[dict[str, int]]:
    counters = lines(variant, band=True)
    pipeline = Pipeline(Detector(str(model), num_threads=2), counters)
    for _ in pipeline.run(frames(video, variant)):
        pass
    return [dict(c.totals) for c in counters]


def score(tally: dict[str, dict[str, int]], true: list[dict[str, int]], got: list[dict[str, int]]) -> None:
    """Add one recording's lines to ``tally`` (per direction: true crossings, counted right, extra)."""
    for t, g in zip(true, got):
        for d in ("in", "out"):
            tally[d]["true"] += t[d]
            tally[d]["right"] += min(t[d], g[d])
            tally[d]["extra"] += max(0, g[d] - t[d])


def describe(tally: dict[str, dict[str, int]]) -> str:
    """Recall and extra counts per direction, and agent eval's accuracy pooled over the lines."""
    return "  ".join(
        f"{d} {c['right']}/{c['true']} ({c['right'] / max(c['true'], 1):.1%}, {c['extra']} extra;"
        f" eval {c['right'] / max(c['true'] + c['extra'], 1):.3f})"
        for d, c in tally.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=assets_folder())
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    say: Callable[[str], None] = (lambda _: None) if args.json else print
    summary: dict[str, dict] = {}
    for name, model in MODELS.items():
        tally = {v.name: {d: dict.fromkeys(KEYS, 0) for d in ("in", "out")} for v in VARIANTS}
        for variant in VARIANTS:
            for clip in CLIPS:
                folder = args.assets / "videos" / clip
                true = truth(folder / "gt" / "gt.txt", variant)
                got = counted(folder / f"{clip}.mp4", args.assets / "models" / model, variant)
                score(tally[variant.name], true, got)
                for x, t, g in zip(XS, true, got):
                    if t != g:
                        counts = f"counted {g['in']}/{g['out']}  true {t['in']}/{t['out']}"
                        say(f"  {name} {variant.name:9} {clip:15} x={x:<3} {counts}")
        total = {d: {k: sum(tally[v.name][d][k] for v in VARIANTS) for k in KEYS} for d in ("in", "out")}
        summary[name] = {"variants": tally, "all": total}
        for label, cells in [*tally.items(), ("all", total)]:
            say(f"{name:16} {label:9} {describe(cells)}")
        say("")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
