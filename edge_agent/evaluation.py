"""Run the whole counting pipeline over a recording and compare it with ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

from edge_agent.counting import Anchor, CountingLine
from edge_agent.detector import Detector
from edge_agent.groundtruth import true_crossings
from edge_agent.pipeline import Pipeline
from edge_agent.sources import open_source
from edge_agent.tally import compare


def evaluate(
    video: str,
    model: str,
    line: tuple[float, float, float, float],
    anchor: Anchor = "foot",
    gt: Optional[Path] = None,
    threads: int = 2,
    model_format: Optional[str] = None,
    progress: Optional[Callable[[int], None]] = None,
    hand: Optional[tuple[int, int]] = None,
) -> dict[str, Any]:
    """Count the crossings of ``line`` (pixels: x1, y1, x2, y2) in a video file or image folder; compare them
    with the true crossings of MOT annotations (``gt``) or with people counted by hand (``hand``: in, out)."""
    x1, y1, x2, y2 = line
    counter = CountingLine("line", (x1, y1), (x2, y2), anchor=anchor)
    pipeline = Pipeline(Detector(model, num_threads=threads, model_format=model_format), [counter], anchor=anchor)
    frames = 0
    with open_source(video) as source:
        started = time.perf_counter()
        for _ in pipeline.run(source):
            frames += 1
            if progress is not None:
                progress(1)
        seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "in": counter.totals["in"],
        "out": counter.totals["out"],
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds else 0.0,
        "gt": None,
    }
    if gt is not None:
        # The README's definition of a true crossing: the annotated reference point changes side.
        truth = true_crossings(gt, CountingLine("gt", (x1, y1), (x2, y2), anchor=anchor, band=0.0, band_fraction=0.0))
        result.update(compare(result["in"], result["out"], truth))
    elif hand is not None:
        result.update(compare(result["in"], result["out"], {"in": hand[0], "out": hand[1]}))
    return result
