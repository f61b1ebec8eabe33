"""The terminal receivers for staff desks: live notices (``alerts watch``), every zone's level (``alerts state``),
and a headcount a grid officer or staff member reports (``alerts headcount``).

Both are plain MQTT subscribers of the contract: the level of each zone is retained on the broker,
so ``state`` answers at once; notices are events, so ``watch`` shows those that arrive while it runs
(QoS 1, deduplicated on the notice id).
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Optional
from zoneinfo import ZoneInfo

import click
import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict

from lanewatch import contract
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site.model import Site


class ReceiverConfig(BaseModel):
    """A receiver's YAML: the broker section of any LaneWatch config (other sections are ignored)."""

    model_config = ConfigDict(extra="ignore")

    broker: BrokerConfig = BrokerConfig()


COLOURS = {"green": "green", "yellow": "yellow", "red": "red", "unknown": "magenta"}


def _messages(broker: BrokerConfig, topics: list[str]) -> tuple[mqtt.Client, queue.Queue]:
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    try:
        client = broker.client(f"alerts-{uuid.uuid4().hex[:8]}")
    except (ValueError, OSError) as exc:  # a password or certificate file that cannot be read
        raise click.ClickException(f"broker settings: {exc}") from None
    client.on_message = lambda _c, _u, message: inbox.put(message)
    if topics:
        client.on_connect = lambda c, _u, _f, reason, _p: c.subscribe([(t, contract.QOS) for t in topics])
    try:
        broker.connect(client, wait=True)
    except OSError as exc:
        raise click.ClickException(f"cannot reach the broker at {broker.host}:{broker.port}: {exc}") from None
    client.loop_start()
    return client, inbox


def level_word(level: str) -> str:
    return click.style(f"{level.upper():7}", fg=COLOURS[level], bold=level == "red")


def states(site: Site, broker: BrokerConfig, wait_s: float) -> dict[str, contract.LevelState]:
    """The retained level of every zone that has one (waits up to ``wait_s`` for all of them)."""
    client, inbox = _messages(broker, [contract.subscription("level", site=site.site.id)])
    found: dict[str, contract.LevelState] = {}
    deadline = time.monotonic() + wait_s
    try:
        while len(found) < len(site.zones) and time.monotonic() < deadline:
            try:
                message = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            state = contract.decode("level", message.payload)
            assert isinstance(state, contract.LevelState)
            found[state.zone] = state
    finally:
        client.disconnect()
        client.loop_stop()
    return found


def state_lines(site: Site, found: dict[str, contract.LevelState]) -> Iterator[str]:
    tz = ZoneInfo(site.site.timezone)
    yield f"{'zone':16} {'level':7} {'occupancy':>17}  {'coverage':>8}  {'since':16}  reason"
    for zone in site.zones:
        state = found.get(zone.id)
        indent = {"area": "", "grid2": "  ", "grid3": "    "}[zone.kind]
        name = f"{indent}{zone.id}"
        if state is None:
            yield f"{name:16} {'-':7} {'':>17}  {'':>8}  {'':16}  no level published yet"
            continue
        occupancy = (
            f"{state.occupancy:,} / {state.capacity:,}"
            if state.occupancy is not None
            else "? / " + f"{state.capacity:,}"
        )
        since = state.since.astimezone(tz).strftime("%Y-%m-%d %H:%M")
        yield f"{name:16} {level_word(state.level)} {occupancy:>17}  {state.coverage:>8.0%}  {since:16}  {state.reason}"


def watch(site: Site, broker: BrokerConfig, zone: Optional[str], count: Optional[int]) -> Iterator[str]:
    """One line (two with the text) per notice for ``zone`` and the zones inside it, as they arrive."""
    tz = ZoneInfo(site.site.timezone)
    client, inbox = _messages(broker, [contract.subscription("zone_notice", site=site.site.id)])
    seen: set[str] = set()
    try:
        while count is None or len(seen) < count:
            try:
                message = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                notice = contract.decode("zone_notice", message.payload)
            except contract.ContractError as exc:
                yield click.style(f"(ignored a malformed notice on {message.topic}: {exc})", dim=True)
                continue
            assert isinstance(notice, contract.DiversionNotice)
            if notice.id in seen or (zone is not None and not site.contains(zone, notice.zone)):
                continue
            seen.add(notice.id)
            yield notice_line(site, notice, tz)
    finally:
        client.disconnect()
        client.loop_stop()


def notice_line(site: Site, notice: contract.DiversionNotice, tz: ZoneInfo) -> str:
    when = notice.time.astimezone(tz).strftime("%H:%M:%S")
    name = site.zone(notice.zone).name
    numbers = f"{notice.occupancy:,}/{notice.capacity:,}" if notice.occupancy is not None else "no data"
    actions = []
    if notice.actions.close_inbound:
        actions.append("close " + ", ".join(notice.actions.close_inbound))
    if notice.actions.meter_inbound:
        actions.append("meter " + ", ".join(notice.actions.meter_inbound))
    if notice.actions.divert_to:
        actions.append("divert to " + ", ".join(notice.actions.divert_to))
    if notice.kind == "predicted_red":
        word = click.style("FORECAST RED", fg="magenta", bold=True)
        state = f"now {notice.level}, {notice.reason}"
    else:
        word, state = level_word(notice.level), f"{notice.trend}, was {notice.previous_level}"
    head = f"{when} {word} {name.zh} {name.en} ({notice.zone}) {numbers} {state}" + (
        f"; {'; '.join(actions)}" if actions else ""
    )
    return f"{head}\n         {notice.text.zh} / {notice.text.en}"


def send_headcount(
    site: Site, broker: BrokerConfig, zone_id: str, count: int, person: Optional[str], note: str = ""
) -> str:
    """Publish a staff headcount of one third-level zone (the person is the broker login unless given);
    returns what was sent once the broker has acknowledged it, or ClickException saying what is wrong."""
    person = person or broker.username
    if not person:
        raise click.ClickException("who counted? give --person ID, or a --config whose broker login is yours")
    zone = site.zones_by_id.get(zone_id)
    if zone is None:
        raise click.ClickException(f"no zone {zone_id!r}; zones: {', '.join(site.zones_by_id)}")
    if site.children(zone.id):
        inside = [z.id for z in site.zones if not site.children(z.id) and site.contains(zone.id, z.id)]
        raise click.ClickException(f"count a third-level grid, not {zone.id}: one of {', '.join(inside)}")
    holding = [z for z in site.zones if site.contains(z.id, zone.id)]
    if not any(person == z.officer or person in z.staff for z in holding):
        raise click.ClickException(f"{person} is not an officer or staff member of {zone.id} in the inventory")
    message = contract.Headcount(
        site=site.site.id, zone=zone.id, person=person, count=count,
        time=datetime.now(timezone.utc), note=note[: contract.MAX_TEXT],
    )  # fmt: skip
    answers: queue.Queue[Any] = queue.Queue()
    client, _inbox = _messages(broker, [])
    client.on_publish = lambda _c, _u, _mid, reason, _p: answers.put(reason)
    try:
        info = client.publish(contract.topic_for(message), contract.encode(message), qos=contract.QOS)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise click.ClickException(f"not sent: {mqtt.error_string(info.rc)}")
        try:
            reason = answers.get(timeout=10)
        except queue.Empty:
            raise click.ClickException("the broker did not acknowledge the headcount in 10 s: send it again") from None
        if getattr(reason, "is_failure", False):
            raise click.ClickException(
                f"the broker refused the headcount ({reason}): is {person} allowed to count {zone.id}? "
                "(the broker's ACL comes from the inventory: `lanewatch site broker-config`)"
            )
    finally:
        client.disconnect()
        client.loop_stop()
    where = f"{zone.name.zh} {zone.name.en} ({zone.id})"
    return f"sent: {where}, {count:,} people counted by {person} at {message.time:%H:%M:%S}Z"
