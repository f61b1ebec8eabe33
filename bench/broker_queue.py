"""What the broker's queue for an absent aggregator costs: memory per queued message, and all of them back.

Real parts: Mosquitto with the example site's generated configuration (`lanewatch site broker-config`:
TLS, a login per device, the queue sized for the outage), the site's 20 devices each logged in as
itself publishing QoS 1 count windows and heartbeats at their real cadence (a window every 5 s, a
heartbeat every 30 s), compressed in time, while the aggregator's persistent session is away. The
broker's resident memory is read from /proc before and after; then the aggregator's session comes
back and every message is counted as it arrives.

    .venv/bin/python bench/broker_queue.py [--hours 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from harness import simulated
from harness.servers import Mosquitto
from harness.sessions import create_session
from lanewatch import EXAMPLE_SITE
from lanewatch.site import load_site
from provisioning.brokerconfig import AGGREGATOR, QUEUED_MESSAGE_MEMORY


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0, help="hours of the site's traffic to queue")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    say = (lambda _t: None) if args.json else (lambda t: print(t, file=sys.stderr, flush=True))
    site = load_site(EXAMPLE_SITE)
    windows = round(args.hours * 3600 / 5)
    start = datetime.now(timezone.utc) - timedelta(hours=args.hours)
    backlog = list(simulated.stream(simulated.devices(site), windows, start=start, window_s=5.0, heartbeat_every=6))
    folder = Path(tempfile.mkdtemp(prefix="lanewatch-queue-"))
    with Mosquitto.for_site(site, folder / "mosquitto") as broker:
        assert isinstance(broker, Mosquitto)
        create_session(broker, "aggregator-1", "lanewatch-aggregator", site.site.id)
        publisher = simulated.Publisher(broker.login)
        for device in site.devices:  # every device connected before the measurement starts
            publisher.client(device.id)
        time.sleep(1)
        before = rss_kb(broker.pid)
        say(f"queueing {len(backlog):,} messages ({args.hours:g} h of {len(site.devices)} devices) ...")
        taken = publisher.send(backlog)
        publisher.close()
        time.sleep(1)
        after = rss_kb(broker.pid)
        say("the aggregator's session comes back; counting what arrives ...")
        arrived = drain(broker, site.site.id, len(backlog))
        budget = broker.files.budget
    per_message = (after - before) * 1024 / max(1, taken)
    result = {
        "messages": len(backlog),
        "acknowledged": taken,
        "arrived": arrived,
        "rss_before_mb": round(before / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "bytes_per_queued_message": round(per_message),
        "assumed_by_broker_config": QUEUED_MESSAGE_MEMORY,
        "configured_queue": budget.messages,
        "configured_outage_h": budget.outage_hours,
        "memory_when_full_mb": round(budget.messages * per_message / 1e6),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{taken:,} of {len(backlog):,} messages acknowledged, {arrived:,} arrived at the aggregator's session")
    print(f"broker memory {result['rss_before_mb']} MB -> {result['rss_after_mb']} MB: "
          f"{result['bytes_per_queued_message']} bytes per queued message (broker-config assumes "
          f"{QUEUED_MESSAGE_MEMORY})")  # fmt: skip
    print(f"the generated queue ({budget.messages:,} messages, {budget.outage_hours:g} h) full: about "
          f"{result['memory_when_full_mb']:,} MB")  # fmt: skip


def drain(broker: Mosquitto, site: str, expected: int) -> int:
    """Reconnect the aggregator's session and count distinct messages until all arrived (or 5 minutes)."""
    login = broker.login(AGGREGATOR)
    seen: set[bytes] = set()
    done = threading.Event()

    def on_message(_c: object, _u: object, message: object) -> None:
        seen.add(message.payload)  # type: ignore[attr-defined]
        if len(seen) >= expected:
            done.set()

    client = login.client("aggregator-1")
    client.on_message = on_message
    login.connect(client, session_expiry_s=3600, receive_maximum=65_535, wait=True)
    client.loop_start()
    done.wait(300)
    client.disconnect()
    client.loop_stop()
    return len(seen)


if __name__ == "__main__":
    main()
