"""The pipeline's output is counts only, and its benchmark measures both sides in one run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from edge_agent.counting import CountingLine
from edge_agent.detector import Detector
from edge_agent.pipeline import Pipeline
from edge_agent.sources import open_source

SSD = "ssd_mobilenet_v1_coco_quant/detect.tflite"


def _leaves(value: object) -> list[object]:
    if dataclasses.is_dataclass(value):
        return [leaf for f in dataclasses.fields(value) for leaf in _leaves(getattr(value, f.name))]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_nothing_but_counts_leaves_the_pipeline(shared_assets: Path) -> None:
    """No frame, crop, box or position: only line names, directions, opaque track numbers, counts."""
    pipeline = Pipeline(Detector(str(shared_assets / "models" / SSD)), [CountingLine("gate", (320, 0), (320, 480))])
    outputs = []
    with open_source(str(shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4")) as source:
        outputs = [counts for _, counts in pipeline.run(source)]
    leaves = [leaf for counts in outputs for leaf in _leaves(counts)]
    assert sum(len(counts.crossings) for counts in outputs) >= 4
    assert all(type(leaf) in (int, str) for leaf in leaves), {type(leaf) for leaf in leaves}
    assert max(counts.in_view for counts in outputs) >= 3


def test_run_and_process_count_the_same(shared_assets: Path) -> None:
    """The threaded run (decode and resize beside inference) changes nothing in the counts."""
    video = str(shared_assets / "videos" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4")
    detector = Detector(str(shared_assets / "models" / SSD))
    threaded = Pipeline(detector, [CountingLine("gate", (320, 0), (320, 480))])
    with open_source(video) as source:
        for _ in threaded.run(source):
            pass
    serial = Pipeline(detector, [CountingLine("gate", (320, 0), (320, 480))])
    with open_source(video) as source:
        for frame in source:
            serial.process(frame.image, frame.index + 1)
    assert threaded.lines[0].totals == serial.lines[0].totals == {"in": 1, "out": 1}


def test_the_helper_thread_gives_way_to_an_interpreter_that_takes_every_core(shared_assets: Path) -> None:
    """Reading and resizing must not preempt the interpreter's threads (they wait for each other
    after every layer): with one interpreter thread per core, the helper runs only when a core is
    idle; with a core to spare, it keeps a normal share (nice 10)."""
    video = str(shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4")
    cores = len(os.sched_getaffinity(0))
    seen = {}
    for threads in sorted({1, cores}):
        pipeline = Pipeline(Detector(str(shared_assets / "models" / SSD), num_threads=threads), [])
        with open_source(video) as source:
            for _ in pipeline.run(source):
                (helper,) = [t for t in threading.enumerate() if t.name == "preprocess"]
                assert helper.native_id is not None
                seen[threads] = (
                    os.sched_getscheduler(helper.native_id),
                    os.getpriority(os.PRIO_PROCESS, helper.native_id),
                )
                break
    assert seen[cores][0] == os.SCHED_IDLE
    if cores > 1:
        assert seen[1] == (os.SCHED_OTHER, 10)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the interpreter's own thread keeps its priority


def test_bench_command_reports_both_rates_and_their_ratio(shared_assets: Path) -> None:
    lanewatch = Path(sys.executable).with_name("lanewatch")
    command = [str(lanewatch), "agent", "bench", str(shared_assets / "videos" / "TUD-Campus" / "TUD-Campus.mp4"),
               "--model", str(shared_assets / "models" / SSD), "--rounds", "1", "--json"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 71
    assert report["format"] == "ssd"
    assert report["bare_invoke_fps"] > 0
    assert report["pipeline_fps"] > 0
    assert abs(report["ratio"] - report["pipeline_fps"] / report["bare_invoke_fps"]) < 0.01
