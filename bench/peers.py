"""LaneWatch against what it is built on and what users would use instead: the README's benchmark table.

Three comparisons, each measured side by side within its own run (the machine is shared and noisy, so
the ratios are what carry across machines), one after the other:

- the edge pipeline (decode the video, preprocess, invoke, decode outputs, track, count) against the
  bare TFLite interpreter on the same frames: SSD MobileNet v1, 2 threads, TUD-Stadtmitte
  (``lanewatch agent bench``);
- one aggregator (every message validated, deduplicated, rolled up, in InfluxDB, acknowledged only
  then) against a bare paho-mqtt subscriber that only receives and acknowledges, same backlog on the
  same broker (``lanewatch aggregator bench``);
- the aggregator against a Node-RED MQTT -> InfluxDB flow on the same backlog (``bench/nodered_drain.py``).

    .venv/bin/python bench/peers.py [--assets ../shared/assets] [--devices 400] [--windows 120] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.assets import assets_folder

HERE = Path(__file__).resolve().parent
LANEWATCH = str(Path(sys.executable).with_name("lanewatch"))


def _run(command: list[str]) -> Any:
    print("running:", " ".join(Path(c).name if c.startswith("/") else c for c in command), file=sys.stderr, flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )  # fmt: skip
    versions = []
    for name, command in (("Mosquitto", ["mosquitto", "-h"]), ("InfluxDB", ["influxd", "version"])):
        try:
            out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
            first = (out.stdout or out.stderr).splitlines()[0]
            versions.append(f"{name} {first.split()[1 if name == 'InfluxDB' else 2]}")
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions.append(f"{name} ?")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {', '.join(versions)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=assets_folder())
    parser.add_argument("--devices", type=int, default=400)
    parser.add_argument("--windows", type=int, default=120)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    video = args.assets / "videos" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"
    model = args.assets / "models" / "ssd_mobilenet_v1_coco_quant" / "detect.tflite"
    backlog = ["--devices", str(args.devices), "--windows", str(args.windows)]
    edge = _run([LANEWATCH, "agent", "bench", str(video), "--model", str(model), "--threads", "2", "--json"])
    broker = _run([LANEWATCH, "aggregator", "bench", *backlog, "--json"])
    nodered = _run([sys.executable, str(HERE / "nodered_drain.py"), *backlog, "--json"])
    result = {
        "machine": _machine(),
        "edge": {"bare_invoke_fps": edge["bare_invoke_fps"], "pipeline_fps": edge["pipeline_fps"],
                 "ratio": edge["ratio"], "ratio_from_memory": edge["ratio_from_memory"]},
        "broker": {"messages": broker["messages"], "bare_msg_s": broker["bare"]["rate"],
                   "aggregator_msg_s": broker["aggregator"]["rate"], "ratio": broker["ratio"]},
        "nodered": {"messages": nodered["messages"], "node_red_msg_s": nodered["node_red_msg_s"],
                    "aggregator_msg_s": nodered["aggregator_msg_s"], "ratio": nodered["ratio"]},
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    e, b, n = result["edge"], result["broker"], result["nodered"]
    print(f"machine: {result['machine']}\n")
    rows = [
        ("edge pipeline / bare TFLite invoke (SSD MobileNet v1, 2 threads)", f"{e['pipeline_fps']:.1f} frames/s",
         f"{e['bare_invoke_fps']:.1f} frames/s", f"{e['ratio']:.2f} (from memory {e['ratio_from_memory']:.2f})"),
        (f"aggregator / bare broker subscriber ({b['messages']:,} QoS 1 messages)", f"{b['aggregator_msg_s']:,} msg/s",
         f"{b['bare_msg_s']:,} msg/s", f"{b['ratio']:.2f}"),
        (f"aggregator / Node-RED MQTT -> InfluxDB flow ({n['messages']:,} messages)",
         f"{n['aggregator_msg_s']:,} msg/s", f"{n['node_red_msg_s']:,} msg/s", f"{n['ratio']:.2f}"),
    ]  # fmt: skip
    print("| comparison (same run, same input) | LaneWatch | reference | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
