"""How long a diversion notice takes from publication to the entrance sign's acknowledgement.

Real parts: a private Mosquitto with the site's generated configuration (TLS, logins, ACLs), the
device's MQTT client (``Publisher``, logged in as the device) subscribed to its entrance's notices, the
sign driver, and a simulated sign on a pseudo-terminal at 9600 baud.

    .venv/bin/python bench/sign_latency.py [--notices 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from edge_agent.config import SignConfig
from edge_agent.outbox import Outbox
from edge_agent.publisher import Publisher
from edge_agent.sign import SignDriver, SimulatedSign
from harness.servers import Mosquitto
from lanewatch import EXAMPLE_SITE, contract
from lanewatch.site import load_site

SITE, ENTRANCE = "sanfang-qixiang", "wenru-west"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lanewatch-bench-"))
    with Mosquitto.for_site(load_site(EXAMPLE_SITE), folder / "broker") as broker:
        assert isinstance(broker, Mosquitto)
        sign = SimulatedSign()
        driver = SignDriver(SignConfig(id="sign-wenru-west", port=sign.port))
        device = Publisher(Outbox(folder / "outbox.db"), broker.login("cam-wenru-west"), SITE, "cam-wenru-west",
                           uuid.uuid4().hex)  # fmt: skip
        topic = contract.KINDS["entrance_notice"].template.format(site=SITE, entrance=ENTRANCE)
        device.subscribe(topic, driver.notice)
        device.start()
        aggregator = broker.login("aggregator")
        sender = aggregator.client("sign-latency")
        aggregator.connect(sender, wait=True)
        sender.loop_start()
        while not device.connected:
            time.sleep(0.05)
        time.sleep(0.5)  # the device's subscription is in place
        latencies = []
        for i in range(args.notices):
            notice = _notice(i)
            before = sign.received
            started = time.perf_counter()
            sender.publish(topic, contract.encode(notice), qos=1)
            while sign.displayed is None or sign.displayed[2] != notice.text.en or sign.received == before:
                time.sleep(0.001)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
        sender.disconnect()
        device.stop()
        driver.close()
        sign.close()
    latencies.sort()
    figures = {
        "notices": len(latencies),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        "max_ms": round(1000 * latencies[-1], 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"notice -> sign acknowledged, {figures['notices']} notices: p50 {figures['p50_ms']} ms, "
              f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms")  # fmt: skip


def _notice(i: int) -> contract.DiversionNotice:
    from datetime import datetime, timezone

    return contract.DiversionNotice(
        site=SITE, id=uuid.uuid4().hex, kind="level_change", zone="wenru", level="red", previous_level="yellow",
        occupancy=1250, capacity=1200, trend="rising", time=datetime.now(timezone.utc), reason="occupancy 104%",
        actions=contract.Actions(close_inbound=[ENTRANCE], divert_to=["guanglu"]),
        text=contract.NoticeText(zh=f"文儒坊已满，请前往光禄坊 {i}", en=f"Wenru Lane is full: visit Guanglu Lane {i}"),
        to=["sign-wenru-west"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
