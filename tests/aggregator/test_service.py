"""The aggregator end to end: real devices' messages in through Mosquitto, exact totals out of InfluxDB.

Every test compares what InfluxDB holds with what the simulated devices counted, per device and
line: the same sums (nothing lost) from the same number of windows (nothing doubled).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
import pytest

from harness import simulated
from harness.servers import InfluxDB, Mosquitto
from harness.sessions import create_session
from lanewatch import contract as c
from lanewatch.site import load_site
from tests.aggregators import (
    AggregatorProcess,
    Desk,
    all_stored,
    expected_raw,
    expected_totals,
    stored_raw,
    stored_totals,
    windows_stored,
)
from tests.conftest import EXAMPLE_SITE, close, connected, run_cli, wait_until

SITE = load_site(EXAMPLE_SITE)


@pytest.fixture
def aggregators(tmp_path: Path) -> Iterator[Callable[..., AggregatorProcess]]:
    """Aggregator processes for this test; whatever is left running is killed at the end."""
    started: list[AggregatorProcess] = []

    def make(server: Mosquitto, influx: InfluxDB, database: str, **settings: object) -> AggregatorProcess:
        process = AggregatorProcess(tmp_path, server, influx, database, **settings)
        started.append(process)
        return process

    yield make
    for process in started:
        process.cleanup()


def database() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def statuses(broker: Mosquitto, *instances: str) -> dict[str, c.AggregatorStatus]:
    """The retained status of every aggregator instance (waiting a little for the named ones)."""
    seen: dict[str, c.AggregatorStatus] = {}

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        status = c.decode("status", message.payload)
        assert isinstance(status, c.AggregatorStatus)
        seen[status.instance] = status

    client = connected(broker, "control-room", f"status-{uuid.uuid4().hex[:6]}",
                       subscribe=[c.subscription("status", site=SITE.site.id)], on_message=on_message)  # fmt: skip
    wait_until(lambda: bool(seen) and all(i in seen for i in instances), 5)
    close(client)
    return seen


def status_of(broker: Mosquitto, instance: str) -> c.AggregatorStatus:
    return statuses(broker, instance)[instance]


def publish(broker: Mosquitto, messages: list[simulated.Message]) -> None:
    """As the devices publish: each logged in as itself; every message taken by the broker."""
    publisher = simulated.Publisher(broker.login)
    try:
        publisher.send(messages)
    finally:
        publisher.close()


def test_a_stream_is_stored_whole_and_rolled_up_into_every_zone(
    mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    db = database()
    aggregator = aggregators(mosquitto, influxdb, db, instance="agg-stream", share_group="g-stream").start()
    aggregator.wait_connected()
    fleet = simulated.devices(SITE)
    messages = list(simulated.stream(fleet, 30))
    publish(mosquitto, messages)
    assert wait_until(lambda: all_stored(influxdb, db, fleet), 60), (stored_totals(influxdb, db), aggregator.log())
    assert wait_until(lambda: stored_raw(influxdb, db) == expected_raw(SITE, fleet), 30)
    heartbeats = influxdb.query("SELECT count(fps) FROM heartbeat", db=db)["results"][0]["series"][0]["values"][0][1]
    assert heartbeats == len(messages) - sum(w for _i, _o, w in expected_totals(fleet).values())
    # Flows per entrance and minute are a query over the windows, exact whatever order they came in.
    flows = influxdb.query('SELECT sum("in") FROM counts WHERE time > now() - 1h GROUP BY time(1m), entrance', db=db)
    per_entrance = {s["tags"]["entrance"]: sum(v[1] or 0 for v in s["values"]) for s in flows["results"][0]["series"]}
    assert per_entrance["nanhou-north"] == sum(t[0] for (d, _l), t in expected_totals(fleet).items()
                                               if d.startswith("cam-nanhou-north"))  # fmt: skip
    assert wait_until(lambda: status_of(mosquitto, "agg-stream").stored == len(messages), 10)
    status = status_of(mosquitto, "agg-stream")
    assert (status.processed, status.rejected, status.deduplicated, status.database) == (len(messages), 0, 0, "ok")
    assert aggregator.stop() == 0
    assert "stopped: processed" in aggregator.log()


@pytest.mark.slow
def test_influxdb_stopped_for_minutes_mid_stream_loses_and_doubles_nothing(
    mosquitto: Mosquitto, fresh_influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    db = database()
    aggregator = aggregators(mosquitto, fresh_influxdb, db, instance="agg-outage", share_group="g-outage").start()
    aggregator.wait_connected()
    fleet = simulated.devices(SITE)
    windows = simulated.stream(fleet, 150)
    publish(mosquitto, [next(windows) for _ in range(500)])
    fresh_influxdb.stop()
    publish(mosquitto, [next(windows) for _ in range(2000)])  # acknowledged by the broker, spooled here
    assert wait_until(lambda: status_of(mosquitto, "agg-outage").spooled > 0, 30)
    outage_end = time.monotonic() + 120  # InfluxDB stays down for two minutes
    while time.monotonic() < outage_end:
        publish(mosquitto, [m for _, m in zip(range(100), windows)])
        time.sleep(5)
    assert status_of(mosquitto, "agg-outage").database == "unreachable"
    fresh_influxdb.start()
    publish(mosquitto, list(windows))
    assert wait_until(lambda: all_stored(fresh_influxdb, db, fleet), 120), aggregator.log()[-3000:]
    assert wait_until(lambda: status_of(mosquitto, "agg-outage").spooled == 0, 30)
    assert wait_until(lambda: stored_raw(fresh_influxdb, db) == expected_raw(SITE, fleet), 30)
    log = aggregator.log()
    for said in ("is unreachable", "spooling to", "spool drained"):
        assert said in log


def test_kill_9_of_the_aggregator_mid_drain_loses_and_doubles_nothing(
    mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    db = database()
    # At most 1,000 messages on their way at once: the kill always leaves most of the 8,000 unstored.
    settings = {"instance": "agg-kill", "share_group": "g-kill", "in_flight": 1000, "influxdb": {"batch_size": 200}}
    create_session(mosquitto, "agg-kill", "g-kill", SITE.site.id)
    fleet = simulated.devices(SITE)
    publish(mosquitto, list(simulated.stream(fleet, 400)))  # queued while the aggregator is away
    first = aggregators(mosquitto, influxdb, db, **settings).start()
    first.wait_connected()
    assert wait_until(lambda: windows_stored(influxdb, db) > 500, 60)
    store = first.store_pid()
    first.kill()
    assert store is not None
    assert wait_until(lambda: not Path(f"/proc/{store}").exists(), 30)  # the store process follows
    assert not all_stored(influxdb, db, fleet)  # the kill came mid-drain
    second = aggregators(mosquitto, influxdb, db, **settings).start()
    assert wait_until(lambda: all_stored(influxdb, db, fleet), 120), second.log()
    assert wait_until(lambda: stored_raw(influxdb, db) == expected_raw(SITE, fleet), 30)
    assert "roll-up restored" in second.log()


def test_a_dead_store_process_stops_the_aggregator_and_a_restart_continues(
    mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    db = database()
    settings = {"instance": "agg-store", "share_group": "g-store"}
    create_session(mosquitto, "agg-store", "g-store", SITE.site.id)
    fleet = simulated.devices(SITE)
    publish(mosquitto, list(simulated.stream(fleet, 300)))
    first = aggregators(mosquitto, influxdb, db, **settings).start()
    first.wait_connected()
    assert wait_until(lambda: windows_stored(influxdb, db) > 500, 60)
    store = first.store_pid()
    assert store is not None
    os.kill(store, 9)
    assert first.process is not None
    assert first.process.wait(60) != 0
    assert "the store process stopped unexpectedly" in first.log()
    aggregators(mosquitto, influxdb, db, **settings).start()
    assert wait_until(lambda: all_stored(influxdb, db, fleet), 120)
    assert wait_until(lambda: stored_raw(influxdb, db) == expected_raw(SITE, fleet), 30)


def test_mosquitto_restarted_mid_drain_loses_and_doubles_nothing(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    db = database()
    create_session(fresh_mosquitto, "agg-broker", "g-broker", SITE.site.id)
    fleet = simulated.devices(SITE)
    publish(fresh_mosquitto, list(simulated.stream(fleet, 400)))
    aggregator = aggregators(fresh_mosquitto, influxdb, db, instance="agg-broker", share_group="g-broker",
                             in_flight=1000, influxdb={"batch_size": 200}).start()  # fmt: skip
    aggregator.wait_connected()
    assert wait_until(lambda: windows_stored(influxdb, db) > 500, 60)
    fresh_mosquitto.stop()
    assert not all_stored(influxdb, db, fleet)
    fresh_mosquitto.start()
    aggregator.wait_connected(times=2)
    publish(fresh_mosquitto, list(simulated.stream(fleet, 20)))  # and the devices carry on
    assert wait_until(lambda: all_stored(influxdb, db, fleet), 120), aggregator.log()[-3000:]
    assert wait_until(lambda: stored_raw(influxdb, db) == expected_raw(SITE, fleet), 30)


def test_the_same_backlog_replayed_twice_counts_once(
    mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    db = database()
    aggregator = aggregators(mosquitto, influxdb, db, instance="agg-replay", share_group="g-replay").start()
    aggregator.wait_connected()
    fleet = simulated.devices(SITE)
    backlog = list(simulated.stream(fleet, 50))
    publish(mosquitto, backlog)
    publish(mosquitto, backlog)
    windows = sum(w for _i, _o, w in expected_totals(fleet).values())
    assert wait_until(lambda: status_of(mosquitto, "agg-replay").processed == 2 * len(backlog), 60)
    assert wait_until(lambda: status_of(mosquitto, "agg-replay").stored == 2 * len(backlog), 60)
    assert stored_totals(influxdb, db) == expected_totals(fleet)
    assert status_of(mosquitto, "agg-replay").deduplicated == windows
    assert wait_until(lambda: stored_raw(influxdb, db) == expected_raw(SITE, fleet), 30)


def test_two_instances_sharing_the_stream_store_exactly_what_one_does(
    mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    one, two = database(), database()
    single = aggregators(mosquitto, influxdb, one, instance="agg-single", share_group="g-single").start()
    pair = [
        aggregators(mosquitto, influxdb, two, instance=f"agg-pair-{i}", share_group="g-pair", roles=["store"]).start()
        for i in range(2)
    ]
    rollup = aggregators(mosquitto, influxdb, two, instance="agg-pair-rollup", share_group="g-pair-rollup",
                         roles=["rollup"]).start()  # fmt: skip
    for process in (single, *pair, rollup):
        process.wait_connected()
    fleet = simulated.devices(SITE)
    messages = list(simulated.stream(fleet, 100))
    publish(mosquitto, messages)
    assert wait_until(lambda: all_stored(influxdb, one, fleet) and all_stored(influxdb, two, fleet), 90)
    assert stored_totals(influxdb, one) == stored_totals(influxdb, two)
    assert wait_until(lambda: stored_raw(influxdb, two) == stored_raw(influxdb, one) == expected_raw(SITE, fleet), 30)

    def stored_by(*instances: str) -> list[int]:
        seen = statuses(mosquitto, *instances)
        return [seen[i].stored for i in instances if i in seen]

    assert wait_until(lambda: stored_by("agg-single") == [len(messages)], 30)
    assert wait_until(lambda: sum(stored_by("agg-pair-0", "agg-pair-1")) == len(messages), 30)
    assert all(n > 0 for n in stored_by("agg-pair-0", "agg-pair-1"))  # the stream was split between them


def test_a_broken_configuration_is_reported_line_by_line(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text("instance: Aggregator One\ninfluxdb:\n  api: v3\n  batch_size: 0\n")
    result = run_cli("aggregator", "run", "--config", str(config))
    assert result.exit_code == 1
    assert f"{config}:1: instance:" in result.stderr
    assert f"{config}:3: influxdb.api:" in result.stderr
    assert f"{config}:4: influxdb.batch_size:" in result.stderr
    assert "Traceback" not in result.stderr


def test_dead_letters_say_why_and_the_technicians_hear_of_the_device(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    mosquitto = fresh_mosquitto
    aggregator = aggregators(mosquitto, influxdb, database(), instance="agg-dead", share_group="g-dead").start()
    aggregator.wait_connected()
    letters: list[dict] = []
    technician = connected(mosquitto, "tech-team", "desk", subscribe=[c.subscription("deadletter", site=SITE.site.id)],
                           on_message=lambda _c, _u, m: letters.append(json.loads(m.payload)))  # fmt: skip
    desk = Desk(mosquitto)
    fleet = simulated.devices(SITE)
    publish(mosquitto, list(simulated.stream(fleet, 1, start=datetime.now(timezone.utc) - timedelta(seconds=5))))
    publish(mosquitto, [("lanewatch/v1/sanfang-qixiang/devices/cam-yijin-west/heartbeat", b"{}")])
    assert wait_until(lambda: letters, 30)
    close(technician)
    assert letters[0]["reason"].startswith("invalid heartbeat: site: Field required (and ")
    assert (letters[0]["payload_b64"], letters[0]["instance"]) == ("e30=", "agg-dead")
    assert (
        "rejected lanewatch/v1/sanfang-qixiang/devices/cam-yijin-west/heartbeat: invalid heartbeat" in aggregator.log()
    )
    assert wait_until(lambda: [f.problem for f in desk.faults()] == ["bad_data"], 30), aggregator.log()[-2000:]
    fault = desk.faults()[0]
    assert (fault.device, fault.zones, fault.to) == ("cam-yijin-west", [], ["tech-team"])  # its zones still count
    assert "site: Field required" in fault.text.en
    desk.close()


@pytest.mark.services  # run_bench starts its own servers
def test_the_bench_measures_both_consumers_on_the_same_backlog() -> None:
    result = run_cli("aggregator", "bench", "--devices", "30", "--windows", "10", "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["messages"] == figures["bare"]["messages"] == figures["aggregator"]["messages"] == 30 * 10 + 30 * 2
    # the ratio of the unrounded rates, so it may differ from that of the printed ones in the last digit
    assert abs(figures["ratio"] - figures["aggregator"]["rate"] / figures["bare"]["rate"]) <= 0.0015
    assert "draining into InfluxDB" in result.stderr


def test_a_zone_filling_up_sends_its_notices_and_keeps_its_level_retained(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    """On a broker of its own: no other aggregator's retained levels."""
    mosquitto = fresh_mosquitto
    aggregator = aggregators(mosquitto, influxdb, database(), instance="agg-levels", share_group="g-levels").start()
    aggregator.wait_connected()
    received: list[tuple[str, bytes]] = []
    room = connected(mosquitto, "control-room", "levels",
                     on_message=lambda _c, _u, m: received.append((m.topic, m.payload)),
                     subscribe=["lanewatch/v1/sanfang-qixiang/zones/yijin/notices",
                                "lanewatch/v1/sanfang-qixiang/zones/yijin/level",
                                "lanewatch/v1/sanfang-qixiang/entrances/yijin-west/notices"])  # fmt: skip
    fleet = simulated.devices(SITE)
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    publish(mosquitto, list(simulated.stream(fleet, 2, start=start, people=0)))  # every device heard: all green
    assert wait_until(lambda: any(t.endswith("/level") and b'"level":"green"' in p for t, p in list(received)), 30)
    gate = next(d for d in fleet if d.device == "cam-yijin-west")
    windows = [gate.window("gate", start + timedelta(seconds=20 + 5 * i), 5.0, 0) for i in range(14)]
    crowd = [w.model_copy(update={"in_": 100, "total_in": w.total_in + 100 * (i + 1)}) for i, w in enumerate(windows)]
    publish(mosquitto, [(c.topic_for(w), c.encode(w)) for w in crowd])  # 1,400 people into a 1,300 grid

    def red() -> dict[str, c.DiversionNotice]:
        """Red notices by topic."""
        found = {t: c.decode("zone_notice", p) for t, p in list(received) if t.endswith("/notices")}
        return {t: n for t, n in found.items() if isinstance(n, c.DiversionNotice) and n.level == "red"}

    assert wait_until(lambda: set(red()) == {
        "lanewatch/v1/sanfang-qixiang/zones/yijin/notices",
        "lanewatch/v1/sanfang-qixiang/entrances/yijin-west/notices"}, 30), aggregator.log()[-2000:]  # fmt: skip
    notice = red()["lanewatch/v1/sanfang-qixiang/zones/yijin/notices"]
    assert notice.occupancy == 1400
    assert notice.previous_level in ("green", "yellow")  # it was green a moment ago
    assert "yijin-west" in notice.actions.close_inbound
    close(room)
    levels: list[bytes] = []  # Yijin's officer, whose phone connects later
    late = connected(mosquitto, "officer-huang", "phone", subscribe=["lanewatch/v1/sanfang-qixiang/zones/yijin/level"],
                     on_message=lambda _c, _u, m: levels.append(m.payload))  # fmt: skip
    assert wait_until(lambda: levels, 10)
    close(late)
    level = c.decode("level", levels[-1])
    assert isinstance(level, c.LevelState)
    assert (level.level, level.occupancy, level.coverage) == ("red", 1400, 1.0)


@pytest.mark.slow
def test_a_live_window_that_turns_a_zone_red_is_stored_and_announced_without_waiting_for_the_flush(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    """Batches are cut every 60 s here: the green comes with one cut, the red window must not wait
    for the next. It is stored (acknowledged only after) and announced at once."""
    mosquitto, db = fresh_mosquitto, database()
    aggregator = aggregators(mosquitto, influxdb, db, instance="agg-now", share_group="g-now",
                             influxdb={"flush_interval_s": 60}, status_s=600).start()  # fmt: skip
    aggregator.wait_connected()
    levels: list[c.LevelState] = []
    room = connected(mosquitto, "control-room", "now", subscribe=["lanewatch/v1/sanfang-qixiang/zones/yijin/level"],
                     on_message=lambda _c, _u, m: levels.append(c.decode("level", m.payload)))  # type: ignore[arg-type]  # fmt: skip
    fleet = simulated.devices(SITE)
    heard = list(simulated.stream(fleet, 1, start=datetime.now(timezone.utc) - timedelta(seconds=5), people=0))
    publish(mosquitto, heard)
    assert wait_until(lambda: levels and levels[-1].level == "green", 90), aggregator.log()[-2000:]
    stored = sum(1 for topic, _payload in heard if "/counts/" in topic)
    assert wait_until(lambda: windows_stored(influxdb, db) == stored, 30)  # the cut that brought the green
    gate = next(d for d in fleet if d.device == "cam-yijin-west")
    now = datetime.now(timezone.utc)
    windows = [gate.window("gate", now - timedelta(seconds=10 * (6 - i)), 10.0, 0) for i in range(7)]
    crowd = [w.model_copy(update={"in_": 200, "total_in": w.total_in + 200 * (i + 1)}) for i, w in enumerate(windows)]
    publish(mosquitto, [(c.topic_for(w), c.encode(w)) for w in crowd])  # 1,400 people into a 1,300 grid, live
    assert wait_until(lambda: levels[-1].level == "red", 30), aggregator.log()[-2000:]  # not at the next cut
    assert levels[-1].occupancy == 1400
    assert wait_until(lambda: windows_stored(influxdb, db) == stored + 7, 30)  # and its windows with it
    close(room)


def test_a_device_that_dies_makes_its_zones_unknown_and_tells_the_technicians(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    mosquitto = fresh_mosquitto
    aggregator = aggregators(mosquitto, influxdb, database(), instance="agg-faults", share_group="g-faults").start()
    aggregator.wait_connected()
    desk = Desk(mosquitto)
    fleet = simulated.devices(SITE)
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    publish(mosquitto, list(simulated.stream(fleet, 2, start=start, people=0)))
    assert wait_until(lambda: desk.level() == "green", 30), aggregator.log()[-2000:]
    # The device at Yijin's west gate: online with its Last Will, then its connection dies.
    online = c.Availability(site="sanfang-qixiang", device="cam-yijin-west", state="online", boot_id=fleet[0].boot_id)
    offline = online.model_copy(update={"state": "offline"})
    device = connected(mosquitto, "cam-yijin-west", will=(c.topic_for(offline), c.encode(offline), True), keepalive_s=5)
    device.publish(c.topic_for(online), c.encode(online), qos=1, retain=True).wait_for_publish(10)
    device.loop_stop()
    device.socket().close()  # no DISCONNECT: the broker publishes the Last Will
    assert wait_until(lambda: desk.level() == "unknown", 30), aggregator.log()[-2000:]
    assert wait_until(lambda: [f.problem for f in desk.faults() if f.device == "cam-yijin-west"] == ["offline"], 10)
    fault = desk.faults()[-1]
    assert "yijin" in fault.zones
    assert fault.to == ["tech-team"]
    # Back online and counting: a real level again, and the technicians hear it recovered.
    publish(mosquitto, [(c.topic_for(online), c.encode(online))])
    publish(mosquitto, list(simulated.stream(fleet, 1, start=start + timedelta(minutes=1), people=0)))
    assert wait_until(lambda: desk.level() == "green", 30)
    assert wait_until(
        lambda: [f.problem for f in desk.faults() if f.device == "cam-yijin-west"] == ["offline", "recovered"], 10
    )
    desk.close()


def test_a_device_gone_silent_makes_its_zones_unknown_until_it_counts_again(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    """No Last Will this time: the device just stops sending (a hung agent, a cut cable behind a switch)."""
    mosquitto = fresh_mosquitto
    aggregator = aggregators(mosquitto, influxdb, database(), instance="agg-silent", share_group="g-silent",
                             levels={"device_timeout_s": 3}).start()  # fmt: skip
    aggregator.wait_connected()
    desk = Desk(mosquitto)
    fleet = simulated.devices(SITE)
    others = [d for d in fleet if d.device != "cam-yijin-west"]
    publish(
        mosquitto, list(simulated.stream(fleet, 1, start=datetime.now(timezone.utc) - timedelta(seconds=5), people=0))
    )
    assert wait_until(lambda: desk.level() == "green", 30), aggregator.log()[-2000:]
    silent_since = time.monotonic()
    while desk.level() != "unknown" and time.monotonic() - silent_since < 30:  # the others keep counting
        publish(
            mosquitto,
            list(simulated.stream(others, 1, start=datetime.now(timezone.utc) - timedelta(seconds=5), people=0)),
        )
        time.sleep(0.5)
    assert desk.level() == "unknown", aggregator.log()[-2000:]
    assert wait_until(lambda: [f.problem for f in desk.faults() if f.device == "cam-yijin-west"] == ["silent"], 10)
    assert all(f.device == "cam-yijin-west" for f in desk.faults())  # the devices that kept counting are fine
    publish(mosquitto, list(simulated.stream(fleet, 1, start=datetime.now(timezone.utc), people=0)))
    assert wait_until(lambda: desk.level() == "green", 30)
    assert wait_until(
        lambda: [f.problem for f in desk.faults() if f.device == "cam-yijin-west"] == ["silent", "recovered"], 10
    )
    desk.close()


def test_a_device_with_a_full_disk_is_reported_and_its_zones_keep_their_level(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    """A full disk does not stop a device counting (it sends from memory), so its zones stay known;
    the technicians are told, and told again when it has space."""
    mosquitto = fresh_mosquitto
    aggregator = aggregators(mosquitto, influxdb, database(), instance="agg-disk", share_group="g-disk").start()
    aggregator.wait_connected()
    desk = Desk(mosquitto)
    fleet = simulated.devices(SITE)
    now = datetime.now(timezone.utc)
    publish(mosquitto, list(simulated.stream(fleet, 1, start=now - timedelta(seconds=5), people=0)))
    assert wait_until(lambda: desk.level() == "green", 30), aggregator.log()[-2000:]
    full = fleet[0].heartbeat(now).model_copy(update={"storage": "full"})
    assert full.device == "cam-yijin-west"
    publish(mosquitto, [(c.topic_for(full), c.encode(full))])
    assert wait_until(lambda: [f.problem for f in desk.faults()] == ["disk_full"], 10), aggregator.log()[-2000:]
    fault = desk.faults()[0]
    assert fault.zones == []  # no zone goes unknown for it
    assert "tech-team" in fault.to
    assert "full disk" in fault.text.en
    publish(mosquitto, list(simulated.stream(fleet, 1, start=datetime.now(timezone.utc), people=0, heartbeat_every=0)))
    assert desk.level() == "green"
    space = fleet[0].heartbeat(datetime.now(timezone.utc))
    publish(mosquitto, [(c.topic_for(space), c.encode(space))])
    assert wait_until(lambda: [f.problem for f in desk.faults()] == ["disk_full", "recovered"], 10)
    assert desk.level() == "green"
    desk.close()


def zone_occupancy(influx: InfluxDB, db: str) -> dict[str, int]:
    body = influx.query("SELECT last(occupancy) FROM zones GROUP BY zone", db=db)
    return {s["tags"]["zone"]: s["values"][0][1] for s in body["results"][0].get("series", [])}


def test_poisoned_messages_are_dead_letters_that_move_no_zone_and_the_technicians_hear_of_them(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    """Each from a device logged in as itself, on its own topics: totals that jump by 20,000 in five seconds,
    totals at 2^53 - 1 from two devices at once, a total_out that would empty a grid (a false green),
    numbers that are not finite, a payload without a protocol version."""
    mosquitto, db = fresh_mosquitto, database()
    aggregator = aggregators(mosquitto, influxdb, db, instance="agg-poison", share_group="g-poison").start()
    aggregator.wait_connected()
    letters: list[c.DeadLetter] = []
    dead = [c.subscription("deadletter", site=SITE.site.id)]
    technician = connected(mosquitto, "tech-team", "poison", subscribe=dead,
                           on_message=lambda _c, _u, m: letters.append(c.decode("deadletter", m.payload)))  # fmt: skip
    desk = Desk(mosquitto)
    fleet = simulated.devices(SITE)
    by_id = {d.device: d for d in fleet}
    start = datetime.now(timezone.utc) - timedelta(minutes=2)
    publish(mosquitto, list(simulated.stream(fleet, 6, start=start, people=6)))  # people in every grid
    assert wait_until(lambda: desk.level() == "green", 30), aggregator.log()[-2000:]
    assert wait_until(lambda: stored_raw(influxdb, db) == expected_raw(SITE, fleet), 30)
    before = zone_occupancy(influxdb, db)
    assert before["yijin"] > 0

    def jump(device: str, **totals: int) -> simulated.Message:
        sim = by_id[device]
        window = sim.record(sim.lines[0], start + timedelta(seconds=35), 5.0, 1, 0)
        total = sim.totals[sim.lines[0]]
        total[0] -= 1  # the device's honest count does not include the poisoned window
        return c.topic_for(window), c.encode(window.model_copy(update=totals))

    beat = json.loads(c.encode(by_id["cam-ta-east"].heartbeat(datetime.now(timezone.utc))))
    heartbeat_topic = c.topic_for(by_id["cam-ta-east"].heartbeat(datetime.now(timezone.utc)))
    yijin_total = by_id["cam-yijin-west"].totals["gate"][0]
    poison = {
        "a jump of 20,000": jump("cam-yijin-west", total_in=yijin_total + 20_000),
        "2^53 - 1 in": jump("cam-wenru-west", total_in=c.MAX_TOTAL),
        "2^53 - 1 out": jump("cam-guanglu-west", total_out=c.MAX_TOTAL),
        "a false green": jump("cam-nanhou-north-a", total_out=10**9),
        "Infinity": (heartbeat_topic, json.dumps(beat).replace('"uptime_s": 3600.0', '"uptime_s": Infinity').encode()),
        "1e999": (heartbeat_topic, json.dumps(beat).replace('"load1": 1.0', '"load1": 1e999').encode()),
        "no version": (heartbeat_topic, json.dumps({k: v for k, v in beat.items() if k != "v"}).encode()),
    }
    publish(mosquitto, list(poison.values()))
    assert wait_until(lambda: len(letters) == len(poison), 30), aggregator.log()[-3000:]
    reasons = [letter.reason for letter in letters]
    assert sum("more than the" in r and "people entrance" in r for r in reasons) == 4, reasons
    assert sum("Input should be a finite number" in r for r in reasons) == 2, reasons
    assert sum("v: the protocol version is required" in r for r in reasons) == 1, reasons
    assert aggregator.process is not None
    assert aggregator.process.poll() is None  # up, both processes
    assert aggregator.store_pid() is not None
    publish(mosquitto, list(simulated.stream(fleet, 1, start=start + timedelta(seconds=40), people=0)))
    assert wait_until(lambda: stored_raw(influxdb, db) == expected_raw(SITE, fleet), 30)
    assert zone_occupancy(influxdb, db) == before  # not one person more or less anywhere
    assert desk.level() == "green"
    poisoned = {"cam-yijin-west", "cam-wenru-west", "cam-guanglu-west", "cam-nanhou-north-a", "cam-ta-east"}
    assert wait_until(lambda: {f.device for f in desk.faults() if f.problem == "bad_data"} == poisoned, 30)
    yijin = next(f for f in desk.faults() if f.device == "cam-yijin-west")
    assert yijin.to == ["tech-team"]
    assert "the totals moved by +20000 in" in yijin.text.en
    close(technician)
    desk.close()


def test_a_point_the_database_refuses_is_set_aside_alone_and_its_batch_is_stored(
    fresh_mosquitto: Mosquitto, influxdb: InfluxDB, aggregators: Callable[..., AggregatorProcess]
) -> None:
    """InfluxDB refuses points whose field changed type (here `availability.online`, made a string by
    someone before). The availability point goes to the spool's `refused` table; the count windows and
    heartbeats written in the same batch are stored."""
    mosquitto, db = fresh_mosquitto, database()  # no other test's retained availability
    influxdb.query(f'CREATE DATABASE "{db}"')
    influxdb.write(db, f'availability,site=sanfang-qixiang,device=cam-ta-east online="yes" {int(time.time()) - 60}')
    aggregator = aggregators(mosquitto, influxdb, db, instance="agg-refused", share_group="g-refused").start()
    aggregator.wait_connected()
    fleet = simulated.devices(SITE)
    messages = list(simulated.stream(fleet, 10))
    online = c.Availability(site=SITE.site.id, device="cam-ta-east", state="online", boot_id=fleet[8].boot_id)
    assert online.device == fleet[8].device
    publish(mosquitto, [*messages[:100], (c.topic_for(online), c.encode(online)), *messages[100:]])
    assert wait_until(lambda: all_stored(influxdb, db, fleet), 60), aggregator.log()[-2000:]
    spool = sqlite3.connect(Path(aggregator.config["state_dir"]) / "spool.db")
    assert wait_until(lambda: spool.execute("SELECT count(*) FROM refused").fetchone()[0] == 1, 30)
    (lines,) = spool.execute("SELECT lines FROM refused").fetchone()
    spool.close()
    assert lines.startswith("availability,site=sanfang-qixiang,device=cam-ta-east,")
    assert "\n" not in lines
    assert "field type conflict" in aggregator.log()
