"""How much the counting pipeline costs beyond inference, measured side by side on the same frames.

Three rates on the same frames, measured in alternating stretches of ``chunk`` frames so that a
noisy neighbour hurts all alike (the order flips every round, and each ratio is the median of the
rounds' own ratios, so a slow spell on a shared machine cannot land on one side only):
- bare: the interpreter alone (set the input, invoke) on frames preprocessed in advance;
- pipeline: everything (read and decode the video, preprocess, invoke, decode the outputs, track,
  count), running on as a device does: one pipeline over the recording again and again, reopened
  at the end of each pass, measured a stretch at a time (between stretches its helper may prepare
  the two or three frames its queue holds: at most 3 of the ``chunk`` frames' reading and resizing);
- pipeline from memory: the same without video decoding and without the helper thread, frames
  already in memory as a camera delivers them (picamera2 and V4L2 hand over raw frames);
and, for reference, the time to read and decode the video alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Generator
from itertools import count, islice
from typing import Any, Callable, Optional

from edge_agent.counting import CountingLine
from edge_agent.detector import Detector
from edge_agent.pipeline import Pipeline, StageTimes
from edge_agent.sources import open_source


def benchmark(
    model: str,
    video: str,
    threads: int = 2,
    rounds: int = 20,
    model_format: Optional[str] = None,
    progress: Optional[Callable[[int], None]] = None,
    max_frames: int = 300,
    chunk: int = 60,
) -> dict[str, Any]:
    """Rates in frames per second over the first ``max_frames`` frames (they are kept in memory)."""
    detector = Detector(model, num_threads=threads, model_format=model_format)
    with open_source(video) as source:
        width, height = source.size
        images = [frame.image for frame, _ in zip(source, range(max_frames))]
    tensors = [detector.preprocess(image).tensor for image in images]
    frames = len(tensors)
    times = StageTimes()  # where the running pipeline's time goes

    def counting_line() -> list[CountingLine]:
        return [CountingLine("mid", (width / 2, 0), (width / 2, height))]

    def replay() -> Generator[int, None, None]:
        """The whole pipeline over the recording, pass after pass, as a looped replay runs."""
        while True:
            run = Pipeline(detector, counting_line(), times=times)
            with open_source(video) as source:
                yield from (index for index, _ in run.run(islice(source, frames)))

    def from_memory() -> Generator[int, None, None]:
        run = Pipeline(detector, counting_line())
        for number in count():
            run.process(images[number % frames], number + 1)
            yield number % frames

    streams = {"pipeline": replay(), "memory": from_memory()}

    def stretch(name: str) -> float:
        stream = streams[name]
        started = time.perf_counter()
        for _ in range(chunk):
            next(stream)
        return chunk / (time.perf_counter() - started)

    position = 0  # every stream is at the same frame: bare goes over the frames they just did

    def bare() -> float:
        started = time.perf_counter()
        for number in range(position, position + chunk):
            detector.invoke(tensors[number % frames])
        return chunk / (time.perf_counter() - started)

    def decode_only() -> float:
        started = time.perf_counter()
        with open_source(video) as source:
            for _ in islice(source, frames):
                pass
        return frames / (time.perf_counter() - started)

    try:
        for name in streams:  # warm-up: caches, lazy allocations, the decoder's first frames
            stretch(name)
        bare()
        position += chunk
        rates: dict[str, list[float]] = {"bare": [], "pipeline": [], "memory": []}
        for round_ in range(rounds):
            order = ["bare", "pipeline", "memory"]
            for name in order if round_ % 2 == 0 else order[::-1]:
                rates[name].append(bare() if name == "bare" else stretch(name))
            position += chunk
            if progress is not None:
                progress(1)
    finally:
        for stream in streams.values():
            stream.close()  # stops the pipeline's helper thread and closes the video
    decode_ms = 1000 / statistics.median(decode_only() for _ in range(3))

    def ratio(name: str) -> float:
        return round(statistics.median(r / b for r, b in zip(rates[name], rates["bare"])), 3)

    return {
        "model": detector.name,
        "format": detector.format,
        "threads": threads,
        "frames": frames,
        "rounds": rounds,
        "chunk": chunk,
        "bare_invoke_fps": round(statistics.median(rates["bare"]), 2),
        "pipeline_fps": round(statistics.median(rates["pipeline"]), 2),
        "ratio": ratio("pipeline"),
        "pipeline_from_memory_fps": round(statistics.median(rates["memory"]), 2),
        "ratio_from_memory": ratio("memory"),
        "video_decode_ms": round(decode_ms, 3),  # reading the file alone
        "rounds_fps": {name: [round(r, 2) for r in values] for name, values in rates.items()},
        # the running pipeline's, a frame: preprocess is the helper thread's (waits included), beside the rest
        "stage_ms": {k: round(v, 3) for k, v in times.per_frame_ms().items()},
    }
