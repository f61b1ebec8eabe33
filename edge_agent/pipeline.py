"""Frame to counts: detect persons, track them, count line crossings and the people in view.

Nothing but numbers leaves a ``Pipeline``: crossings carry a line name, a direction and an opaque
track number, and the frames, boxes and positions stay inside it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from edge_agent.counting import Anchor, CountingLine, Crossing, RegionOfInterest, in_view, reference_points
from edge_agent.detector import Detector, Prepared
from edge_agent.sources import Frame
from edge_agent.tracker import ByteTracker, Track, smoothed_boxes


@dataclass
class StageTimes:
    """Seconds spent in each stage, summed over frames (for the benchmark and the heartbeat)."""

    preprocess: float = 0.0
    invoke: float = 0.0
    decode: float = 0.0
    track_and_count: float = 0.0
    frames: int = 0

    def per_frame_ms(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {k: 1000 * v / n for k, v in vars(self).items() if k != "frames"}


@dataclass(frozen=True)
class FrameCounts:
    crossings: list[Crossing]
    in_view: int


@dataclass
class Pipeline:
    detector: Detector
    lines: Sequence[CountingLine]
    tracker: ByteTracker = field(default_factory=ByteTracker)
    roi: Optional[RegionOfInterest] = None
    anchor: Anchor = "foot"
    times: StageTimes = field(default_factory=StageTimes)

    def __post_init__(self) -> None:
        # The tracker's second pass needs the weak detections too, so the detector keeps them.
        self.detector.score_threshold = min(self.detector.score_threshold, self.tracker.low_score)

    def process(self, image: np.ndarray, frame: int) -> FrameCounts:
        """One frame, start to finish, in this thread."""
        started = time.perf_counter()
        prepared = self.detector.preprocess(image)
        self.times.preprocess += time.perf_counter() - started
        return self.count(prepared, frame)

    def run(self, frames: Iterable[Frame]) -> Iterator[tuple[int, FrameCounts]]:
        """Every frame of a source, read (for recordings, decoded) and preprocessed in one helper thread.

        OpenCV and the interpreter release the GIL, so the helper prepares the next frame while this
        thread decodes and tracks this one; the queue is short, so latency stays bounded. When the
        interpreter's threads take every core, the helper runs only on a core they leave idle.
        """
        prepared: queue.Queue[Optional[tuple[int, Prepared]]] = queue.Queue(maxsize=2)
        stop = threading.Event()
        failure: list[BaseException] = []

        def prepare() -> None:
            _give_way_to_inference(only_when_idle=self.detector.num_threads >= _usable_cores())
            try:
                for frame in frames:
                    if stop.is_set():
                        break
                    started = time.perf_counter()
                    item = (frame.index, self.detector.preprocess(frame.image))
                    self.times.preprocess += time.perf_counter() - started
                    prepared.put(item)
            except BaseException as exc:  # re-raised in the consumer's thread below
                failure.append(exc)
            finally:
                prepared.put(None)

        helper = threading.Thread(target=prepare, name="preprocess", daemon=True)
        helper.start()
        try:
            while (item := prepared.get()) is not None:
                yield item[0], self.count(item[1], item[0] + 1)
        finally:
            stop.set()
            while helper.is_alive():  # unblock the helper if it waits on a full queue
                with contextlib.suppress(queue.Empty):
                    prepared.get(timeout=0.01)
        if failure:
            raise failure[0]

    def count(self, prepared: Prepared, frame: int) -> FrameCounts:
        """Inference, decoding, tracking and counting for one prepared frame."""
        t0 = time.perf_counter()
        self.detector.invoke(prepared.tensor)
        t1 = time.perf_counter()
        detections = self.detector.decode(prepared.transform)
        t2 = time.perf_counter()
        boxes, scores = detections.boxes, detections.scores
        if self.roi is not None and len(scores):
            inside = self.roi.contains(reference_points(boxes, self.anchor))
            boxes, scores = boxes[inside], scores[inside]
        tracks = self.tracker.update(boxes, scores)
        track_boxes = smoothed_boxes(tracks)
        crossings = count_crossings(self.lines, tracks, track_boxes, frame)
        if frame % 100 == 0:
            kept = [t.id for t in self.tracker.tracks]
            for line in self.lines:
                line.forget(kept)
        confirmed = track_boxes[[t.confirmed for t in tracks]] if tracks else track_boxes
        counts = FrameCounts(crossings, in_view(confirmed, self.anchor, self.roi))
        times = self.times
        times.invoke += t1 - t0
        times.decode += t2 - t1
        times.track_and_count += time.perf_counter() - t2
        times.frames += 1
        return counts


def count_crossings(
    lines: Sequence[CountingLine], tracks: list[Track], boxes: np.ndarray, frame: int
) -> list[Crossing]:
    """The crossings of every line by the tracks seen in this frame (at ``boxes``). A track that
    starts where its person was already seen before (``Track.origin``) starts on that side: someone
    half hidden in a group may cross the line before their track begins."""
    born = [t for t in tracks if t.origin is not None]
    if born:
        origins = np.array([t.origin for t in born])
        for line in lines:
            line.update([t.id for t in born], origins, frame)
    ids = [t.id for t in tracks]
    return [c for line in lines for c in line.update(ids, boxes, frame)]


def _give_way_to_inference(only_when_idle: bool = False) -> None:
    """Lower this thread's priority so that helper work does not preempt inference.

    Per-thread nice 10 by default; ``only_when_idle`` (Linux SCHED_IDLE) when the interpreter's
    threads take every core: the interpreter's threads meet at a barrier after each layer, so a
    helper preempting any of them stalls them all, and the helper should run only in the gaps
    (while the frame's outputs are decoded and tracked). Measured with ``lanewatch agent bench``.
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: normal priority
        if only_when_idle:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
        else:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
