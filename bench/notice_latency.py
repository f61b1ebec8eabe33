"""How long a red notice takes from the count that crossed the threshold to a subscriber.

Real parts: a private Mosquitto with the site's generated configuration (TLS, a login per device and
person), InfluxDB, the aggregator (`lanewatch aggregator run`, its own processes), and Yijin's grid
officer's MQTT subscriber on the zone's notices. Each trial publishes one count window that
pushes Yijin Lane (capacity 1,300) over 100 % and waits for the red notice, then one that brings it
back down (dwell 0 here, so that trials can follow each other; the other devices only speak at
the start, so their silence timeout is set beyond the run). Latency is measured from just before
the window's publish to the notice's arrival, on the same clock. Windows end at the current time, as
live devices' do (a backlog or replay is evaluated on the data's own clock, in `step_s` steps).

    .venv/bin/python bench/notice_latency.py [--trials 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt

from harness import simulated
from harness.servers import Mosquitto
from harness.sessions import local_aggregator
from lanewatch import EXAMPLE_SITE, contract
from lanewatch.site import load_site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    site = load_site(EXAMPLE_SITE)
    folder = Path(tempfile.mkdtemp(prefix="lanewatch-latency-"))
    settings = {"levels": {"default": {"dwell_s": 0}, "device_timeout_s": 3600}}
    with local_aggregator(folder, **settings) as (broker, _database):
        latencies = measure(site, broker, args.trials)
    ordered = sorted(latencies)
    result = {
        "trials": len(latencies),
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"red notice after the crossing count, {result['trials']} trials: median {result['median_ms']} ms, "
              f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms (target: p99 at most 50 ms)")  # fmt: skip


def measure(site: object, broker: Mosquitto, trials: int) -> list[float]:
    arrivals: queue.Queue[tuple[float, contract.DiversionNotice]] = queue.Queue()
    officer = broker.login("officer-huang")  # Yijin Lane's officer
    listener = officer.client("latency")

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        notice = contract.decode("zone_notice", message.payload)
        assert isinstance(notice, contract.DiversionNotice)
        arrivals.put((time.monotonic(), notice))

    listener.on_message = on_message
    officer.connect(listener, wait=True)
    listener.subscribe("lanewatch/v1/sanfang-qixiang/zones/yijin/notices", qos=1)
    listener.loop_start()
    publisher = simulated.Publisher(broker.login)
    fleet = simulated.devices(site)  # type: ignore[arg-type]
    deadline = time.monotonic() + 120
    while True:  # until the aggregator is up and has heard every device: yijin turns green
        publisher.send(simulated.stream(fleet, 1, start=datetime.now(timezone.utc) - timedelta(seconds=5), people=0))
        try:
            if arrivals.get(timeout=1.0)[1].level == "green":
                break
        except queue.Empty:
            if time.monotonic() > deadline:
                raise RuntimeError("the aggregator did not turn Yijin green") from None
    gate = next(d for d in fleet if d.device == "cam-yijin-west")
    end = datetime.now(timezone.utc)

    def count(people_in: int, people_out: int) -> float:
        """Publish one window of the Yijin west gate, ending now (live data); the time just before."""
        nonlocal end
        end = max(end + timedelta(milliseconds=1), datetime.now(timezone.utc))
        window = gate.window("gate", end, 5.0, 0)
        gate.totals["gate"][0] += people_in
        gate.totals["gate"][1] += people_out
        window = window.model_copy(update={"in_": people_in, "out": people_out, "total_in": gate.totals["gate"][0],
                                           "total_out": gate.totals["gate"][1]})  # fmt: skip
        sent = time.monotonic()
        publisher.send([(contract.topic_for(window), contract.encode(window))])
        return sent

    def wait_for(level: str) -> float:
        while True:
            arrived, notice = arrivals.get(timeout=30)
            if notice.level == level:
                return arrived

    for _ in range(10):  # fill Yijin (capacity 1,300) to 1,100: yellow
        count(110, 0)
    wait_for("yellow")
    latencies = []
    for _ in range(trials):
        count(100, 0)  # 1,200: still yellow
        sent = count(100, 0)  # 1,300: 100 %, red
        latencies.append(wait_for("red") - sent)
        count(0, 100)  # 1,200: 92 %, inside the band: still red
        count(0, 100)  # 1,100: 85 %, below 90 %: back to yellow (dwell 0 in this bench)
        wait_for("yellow")
    publisher.close()
    listener.disconnect()
    listener.loop_stop()
    return latencies


if __name__ == "__main__":
    main()
