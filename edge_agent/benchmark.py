"""How much the counting pipeline costs beyond inference, measured side by side on the same frames.

The bare rate is the interpreter alone (set the input, invoke) on frames preprocessed in advance;
the pipeline rate is everything (read and decode the video, preprocess, invoke, decode the
outputs, track, count). Rounds alternate between the two so that a noisy neighbour hurts both.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional

from edge_agent.counting import CountingLine
from edge_agent.detector import Detector
from edge_agent.pipeline import Pipeline
from edge_agent.sources import open_source


def benchmark(
    model: str,
    video: str,
    threads: int = 2,
    rounds: int = 3,
    model_format: Optional[str] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> dict[str, Any]:
    detector = Detector(model, num_threads=threads, model_format=model_format)
    with open_source(video) as source:
        width, height = source.size
        tensors = [detector.preprocess(frame.image).tensor for frame in source]
    frames = len(tensors)

    def bare() -> float:
        started = time.perf_counter()
        for tensor in tensors:
            detector.invoke(tensor)
        return frames / (time.perf_counter() - started)

    def pipeline() -> float:
        line = CountingLine("mid", (width / 2, 0), (width / 2, height))
        run = Pipeline(detector, [line])
        started = time.perf_counter()
        with open_source(video) as source:
            counted = sum(1 for _ in run.run(source))
        assert counted == frames, f"the pipeline saw {counted} of {frames} frames"
        return frames / (time.perf_counter() - started)

    bare(), pipeline()  # warm-up: caches, lazy allocations, the decoder's first frames
    bare_rates, pipeline_rates = [], []
    for _ in range(rounds):
        bare_rates.append(bare())
        pipeline_rates.append(pipeline())
        if progress is not None:
            progress(1)
    bare_fps, pipeline_fps = statistics.median(bare_rates), statistics.median(pipeline_rates)
    return {
        "model": detector.name,
        "format": detector.format,
        "threads": threads,
        "frames": frames,
        "rounds": rounds,
        "bare_invoke_fps": round(bare_fps, 2),
        "pipeline_fps": round(pipeline_fps, 2),
        "ratio": round(pipeline_fps / bare_fps, 3),
        "bare_rounds_fps": [round(r, 2) for r in bare_rates],
        "pipeline_rounds_fps": [round(r, 2) for r in pipeline_rates],
    }
