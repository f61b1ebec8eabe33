"""``lanewatch aggregator bench``: how fast the aggregator drains a backlog, beside a bare subscriber.

The same backlog (hundreds of devices' count windows and heartbeats, QoS 1, each device logged in as
itself) is queued on a private Mosquitto running the generated site configuration (TLS, logins, ACLs)
for a persistent session while its consumer is stopped. Then, in the same run:
- a bare paho-mqtt subscriber (receive and acknowledge, nothing else, over the same TLS login) drains
  it: the physical limit of this client library on this machine;
- the aggregator (``lanewatch aggregator run`` as its own process) drains it into a private
  InfluxDB; its time ends when InfluxDB holds every window and heartbeat.
Both clock from their CONNACK to their last message, measured here, so process start-up is not
part of either. The load generator runs before the clocks start and never competes with them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from harness import simulated
from harness.servers import InfluxDB, Mosquitto
from lanewatch import EXAMPLE_SITE, contract
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site import load_site
from lanewatch.site.model import Site
from provisioning.brokerconfig import AGGREGATOR

BARE_GROUP = "bench-bare"


@contextlib.contextmanager
def local_aggregator(
    folder: Path, inventory: Optional[Path] = None, **settings: Any
) -> Iterator[tuple[Mosquitto, InfluxDB]]:
    """A private Mosquitto (the example site's generated configuration) and InfluxDB, and `lanewatch
    aggregator run` on them for the example site (or ``inventory``, the same site told more), subscribed
    before this yields them (messages published earlier would go nowhere)."""
    broker_server = Mosquitto.for_site(load_site(EXAMPLE_SITE), folder / "mosquitto")
    with broker_server as broker, InfluxDB(folder / "influxdb") as database:
        assert isinstance(broker, Mosquitto)
        assert isinstance(database, InfluxDB)
        config = folder / "aggregator.yaml"
        config.write_text(yaml.safe_dump({
            "state_dir": str(folder / "state"), "broker": broker.section(AGGREGATOR),
            "influxdb": {"url": database.url}, **settings,
        }))  # fmt: skip
        log = folder / "aggregator.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "console", "aggregator", "run", "--config", str(config),
                 "--site", str(inventory or EXAMPLE_SITE)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "subscription granted" not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the aggregator did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.2)
            yield broker, database
        finally:
            process.terminate()
            process.wait(60)


def backlog_arguments(doc: str) -> argparse.Namespace:
    """The command line of the drain benchmarks: --devices, --windows, --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--devices", type=int, default=400, help="simulated devices")
    parser.add_argument("--windows", type=int, default=120, help="count windows per device in the backlog")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return parser.parse_args()


def synthetic_site(devices: int) -> dict:
    """A city-sized inventory: one area, 4 second-level grids, 20 third-level grids, one device per entrance."""
    zones = [{"id": "city", "name": {"zh": "城区", "en": "City"}, "kind": "area", "capacity": 10**6}]
    people = [{"id": "control-room", "name": "Control room", "role": "control_room"}]
    for g in range(4):
        people.append({"id": f"officer-g{g}", "name": f"Officer {g}", "role": "officer"})
        zones.append({"id": f"g{g}", "name": {"zh": f"片区{g}", "en": f"District {g}"}, "kind": "grid2",
                      "parent": "city", "capacity": 250_000, "officer": f"officer-g{g}"})  # fmt: skip
        for z in range(5):
            people.append({"id": f"staff-g{g}-z{z}", "name": f"Staff {g}-{z}", "role": "staff"})
            zones.append({"id": f"g{g}-z{z}", "name": {"zh": f"网格{g}-{z}", "en": f"Grid {g}-{z}"}, "kind": "grid3",
                          "parent": f"g{g}", "capacity": 50_000, "area_m2": 20_000.0, "officer": f"officer-g{g}",
                          "staff": [f"staff-g{g}-z{z}"]})  # fmt: skip
    grids = [z["id"] for z in zones if z["kind"] == "grid3"]
    entrances, fleet = [], []
    for i in range(devices):
        entrance = {"id": f"e{i}", "name": {"zh": f"入口{i}", "en": f"Entrance {i}"}, "zone": grids[i % len(grids)],
                    "width_m": 6.0}  # fmt: skip
        if i % 3 == 1:  # a third of the entrances lie between two grids
            entrance["outside"] = grids[(i + 1) % len(grids)]
        entrances.append(entrance)
        fleet.append({"id": f"d{i}", "entrance": f"e{i}", "hardware": "simulated",
                      "lines": [{"name": "gate", "start": [0.5, 0.0], "end": [0.5, 1.0]}]})  # fmt: skip
    return {"site": {"id": "bench", "name": {"zh": "基准", "en": "Bench"}, "timezone": "Asia/Shanghai"},
            "people": people, "zones": zones, "entrances": entrances, "devices": fleet}  # fmt: skip


@dataclass
class Drain:
    consumer: str
    instances: int
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _lines(process: subprocess.Popen) -> Iterator[str]:
    assert process.stdout is not None
    for raw in process.stdout:
        yield raw.decode(errors="replace").rstrip()


def _watch(process: subprocess.Popen, marker: str, seen: threading.Event, log: list[str]) -> None:
    for line in _lines(process):
        log.append(line)
        if marker in line:
            seen.set()


def create_session(broker: Mosquitto, instance: str, group: str, site: str) -> None:
    """Subscribe once as the aggregator ``instance`` and leave, so that the broker queues the backlog for
    this session."""
    login = broker.login(AGGREGATOR)
    client = login.client(instance)
    granted = threading.Event()
    client.on_subscribe = lambda *_args: granted.set()
    login.connect(client, session_expiry_s=3600, wait=True)
    client.loop_start()
    client.subscribe(f"$share/{group}/lanewatch/v1/{site}/devices/#", qos=1)
    if not granted.wait(30):
        raise RuntimeError(f"the broker did not answer the subscription of {instance}")
    client.disconnect()
    client.loop_stop()


def _queue(broker: Mosquitto, backlog: list[simulated.Message]) -> None:
    """Every device publishes its part of the backlog, in order, logged in as itself (a few hundred at once)."""
    backlog = sorted(backlog, key=lambda message: simulated.sender_of(message[0]))  # stable: each device in order
    publisher = simulated.Publisher(broker.login)
    try:
        publisher.send(backlog)
    finally:
        publisher.close()


def _wait_all(starts: list[threading.Event], timeout: float) -> float:
    """Wait until every consumer is connected; the time the first one was."""
    deadline = time.monotonic() + timeout
    first = None
    for event in starts:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError("a consumer did not connect")
        first = first or time.monotonic()
    return first or time.monotonic()


def bare_drain(
    broker: Mosquitto, site: str, backlog: list[simulated.Message], instances: int, receive_max: int
) -> Drain:
    ids = [f"bench-bare-{i}" for i in range(instances)]
    for client_id in ids:
        create_session(broker, client_id, BARE_GROUP, site)
    _queue(broker, backlog)
    share = len(backlog)
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harness.sessions",
                "bare",
                broker.login(AGGREGATOR).model_dump_json(),
                client_id,
                str(receive_max),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for client_id in ids
    ]
    connected = [threading.Event() for _ in processes]
    logs: list[list[str]] = [[] for _ in processes]
    received = [0] * instances
    done = threading.Event()

    def follow(i: int) -> None:
        for line in _lines(processes[i]):
            logs[i].append(line)
            if line == "connected":
                connected[i].set()
            elif line.startswith("received "):
                received[i] = int(line.split()[1])
                if sum(received) >= share:
                    done.set()

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(instances)]
    for thread in threads:
        thread.start()
    start = _wait_all(connected, 60)
    if not done.wait(600):
        raise RuntimeError(f"the bare subscribers received {sum(received)} of {share}: {logs}")
    seconds = time.monotonic() - start
    for process in processes:
        process.terminate()
        process.wait(10)
    return Drain("bare paho subscriber", instances, share, seconds)


def _count(database: InfluxDB, db: str) -> int:
    body = database.query('SELECT count("in") FROM counts; SELECT count("fps") FROM heartbeat', db=db)
    total = 0
    for result in body.get("results", []):
        for series in result.get("series", []):
            total += int(series["values"][0][1])
    return total


def aggregator_drain(
    broker: Mosquitto, database: InfluxDB, folder: Path, site_file: Path, site: Site,
    backlog: list[simulated.Message], instances: int,
) -> Drain:  # fmt: skip
    db = "bench"
    database.query(f'DROP DATABASE "{db}"')
    configs: list[tuple[str, str, Path]] = []
    roles = [["store", "rollup"]] if instances == 1 else [["store"]] * instances + [["rollup"]]
    for i, role in enumerate(roles):
        config = {
            "instance": f"bench-aggregator-{i}",
            "share_group": "bench-aggregator" if role != ["rollup"] else "bench-rollup",
            "roles": role,
            "state_dir": str(folder / f"aggregator-{i}"),
            "broker": broker.section(AGGREGATOR),
            "influxdb": {"url": database.url, "database": db},
            "status_s": 0.1,
        }
        path = folder / f"aggregator-{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        configs.append((str(config["instance"]), str(config["share_group"]), path))
    for instance, group, _path in configs:
        create_session(broker, instance, group, site.site.id)
    _queue(broker, backlog)
    stored = len(backlog)
    processes, connected, logs = [], [], []
    command = [sys.executable, "-m", "console", "aggregator", "run", "--site", str(site_file), "--config"]
    for _instance, _group, path in configs:
        process = subprocess.Popen([*command, str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        event, log = threading.Event(), list[str]()
        threading.Thread(target=_watch, args=(process, "connected to", event, log), daemon=True).start()
        processes.append(process)
        connected.append(event)
        logs.append(log)
    status = StatusWatch(broker, site.site.id)
    try:
        start = _wait_all(connected, 120)
        deadline = time.monotonic() + 600
        # The instances' retained status says how many messages they stored, without loading the
        # database; InfluxDB itself then confirms that it holds every one.
        while status.stored() < stored or _count(database, db) < stored:
            if time.monotonic() > deadline:
                raise RuntimeError(f"InfluxDB holds {_count(database, db)} of {stored}; logs: {logs}")
            time.sleep(0.01)
        seconds = time.monotonic() - start
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        status.close()
    return Drain("aggregator", instances, stored, seconds)


class StatusWatch:
    """The latest retained status of every aggregator instance."""

    def __init__(self, broker: Mosquitto, site: str) -> None:
        login = broker.login(AGGREGATOR)
        self._latest: dict[str, int] = {}
        self.client = login.client(f"status-watch-{os.getpid()}")
        self.client.on_message = self._on_message
        login.connect(self.client, wait=True)
        self.client.subscribe(contract.subscription("status", site=site), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: Any) -> None:
        status = contract.decode("status", message.payload)
        assert isinstance(status, contract.AggregatorStatus)
        self._latest[status.instance] = status.stored

    def stored(self) -> int:
        return sum(self._latest.values())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_bench(
    devices: int = 400, windows: int = 120, instances: int = 1, progress: Optional[Callable[[str], None]] = None
) -> dict:
    say = progress or (lambda _text: None)
    folder = Path(tempfile.mkdtemp(prefix="lanewatch-bench-"))
    site_file = folder / "site.yaml"
    site_file.write_text(yaml.safe_dump(synthetic_site(devices), allow_unicode=True))
    site = load_site(site_file)
    backlog = list(simulated.stream(simulated.devices(site), windows))
    count_windows = sum(1 for topic, _ in backlog if "/counts/" in topic)
    heartbeats = len(backlog) - count_windows
    say(f"backlog: {len(backlog)} messages ({count_windows} count windows, {heartbeats} heartbeats), {devices} devices")
    say("generating the broker configuration (TLS, one login per device) ...")
    with Mosquitto.for_site(site, folder / "mosquitto") as broker, InfluxDB(folder / "influxdb") as database:
        assert isinstance(broker, Mosquitto)
        assert isinstance(database, InfluxDB)
        say(f"bare paho subscriber x{instances} draining ...")
        bare = bare_drain(broker, site.site.id, backlog, instances, receive_max=65_535)
        say(f"  {bare.rate:,.0f} messages/s")
        say(f"aggregator x{instances} draining into InfluxDB ...")
        agg = aggregator_drain(broker, database, folder, site_file, site, backlog, instances)
        say(f"  {agg.rate:,.0f} messages/s")
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "devices": devices,
        "messages": len(backlog),
        "count_windows": count_windows,
        "instances": instances,
        "bare": {**asdict(bare), "rate": round(bare.rate)},
        "aggregator": {**asdict(agg), "rate": round(agg.rate)},
        "ratio": round(agg.rate / bare.rate, 3),
    }


def _bare_subscriber(login: BrokerConfig, name: str, receive_max: int) -> None:
    """Receive and acknowledge, nothing else; print progress lines for the bench to read."""
    received = 0

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal received
        received += 1

    client = login.client(name)
    client.on_message = on_message
    client.on_connect = lambda *_a: print("connected", flush=True)
    login.connect(client, session_expiry_s=3600, receive_maximum=receive_max, wait=True)
    client.loop_start()
    last = 0
    while True:
        time.sleep(0.02)
        if received != last:
            last = received
            print(f"received {last}", flush=True)


if __name__ == "__main__" and sys.argv[1:2] == ["bare"]:
    _bare_subscriber(BrokerConfig.model_validate_json(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
