"""How much the counting pipeline costs beyond inference, measured side by side on the same frames.

Three rates, on the same frames, in alternating rounds so that a noisy neighbour hurts all alike:
- bare: the interpreter alone (set the input, invoke) on frames preprocessed in advance;
- pipeline: everything (read and decode the video, preprocess, invoke, decode the outputs,
  track, count);
- pipeline from memory: the same without video decoding, frames already in memory as a camera
  delivers them (picamera2 and V4L2 hand over raw frames; only recordings need decoding);
and, for reference, the time to read and decode the video alone.
"""

from __future__ import annotations

import statistics
import time
from itertools import islice
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
    max_frames: int = 300,
) -> dict[str, Any]:
    """Rates in frames per second over the first ``max_frames`` frames (they are kept in memory)."""
    detector = Detector(model, num_threads=threads, model_format=model_format)
    with open_source(video) as source:
        width, height = source.size
        images = [frame.image for frame, _ in zip(source, range(max_frames))]
    tensors = [detector.preprocess(image).tensor for image in images]
    frames = len(tensors)

    def bare() -> float:
        started = time.perf_counter()
        for tensor in tensors:
            detector.invoke(tensor)
        return frames / (time.perf_counter() - started)

    def pipeline() -> float:
        run = Pipeline(detector, [CountingLine("mid", (width / 2, 0), (width / 2, height))])
        started = time.perf_counter()
        with open_source(video) as source:
            counted = sum(1 for _ in run.run(islice(source, frames)))
        assert counted == frames, f"the pipeline saw {counted} of {frames} frames"
        return frames / (time.perf_counter() - started)

    stage_ms: list[dict[str, float]] = []

    def from_memory() -> float:
        run = Pipeline(detector, [CountingLine("mid", (width / 2, 0), (width / 2, height))])
        started = time.perf_counter()
        for index, image in enumerate(images):
            run.process(image, index + 1)
        rate = frames / (time.perf_counter() - started)
        stage_ms.append(run.times.per_frame_ms())
        return rate

    def decode_only() -> float:
        started = time.perf_counter()
        with open_source(video) as source:
            for _ in islice(source, frames):
                pass
        return frames / (time.perf_counter() - started)

    bare(), pipeline(), from_memory()  # warm-up: caches, lazy allocations, the decoder's first frames
    rates: dict[str, list[float]] = {"bare": [], "pipeline": [], "memory": [], "decode": []}
    for _ in range(rounds):
        rates["bare"].append(bare())
        rates["pipeline"].append(pipeline())
        rates["memory"].append(from_memory())
        rates["decode"].append(decode_only())
        if progress is not None:
            progress(1)
    bare_fps, pipeline_fps = statistics.median(rates["bare"]), statistics.median(rates["pipeline"])
    memory_fps = statistics.median(rates["memory"])
    return {
        "model": detector.name,
        "format": detector.format,
        "threads": threads,
        "frames": frames,
        "rounds": rounds,
        "bare_invoke_fps": round(bare_fps, 2),
        "pipeline_fps": round(pipeline_fps, 2),
        "ratio": round(pipeline_fps / bare_fps, 3),
        "pipeline_from_memory_fps": round(memory_fps, 2),
        "ratio_from_memory": round(memory_fps / bare_fps, 3),
        "video_decode_ms": round(1000 / statistics.median(rates["decode"]), 3),  # reading the file alone
        "rounds_fps": {name: [round(r, 2) for r in values] for name, values in rates.items()},
        # where a frame's time goes in the pipeline (from memory), median over the rounds
        "stage_ms": {k: round(statistics.median(t[k] for t in stage_ms[1:]), 3) for k in stage_ms[0]},
    }
