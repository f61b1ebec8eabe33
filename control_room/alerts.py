"""The terminal receivers for staff desks: live notices (``alerts watch``), every zone's level (``alerts state``),
and a headcount a grid officer or staff member reports (``alerts headcount``).

Both are plain MQTT subscribers of the contract: the level of each zone is retained on the broker,
so ``state`` answers at once; notices are events, so ``watch`` shows those that arrive while it runs
(QoS 1, deduplicated on the notice id).
"""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
REMIND_S = 30.0  # a watcher without its broker says so again this often
SESSION_S = 3600  # the broker keeps a watcher's notices this long while it is away


def _client(broker: BrokerConfig, persistent: bool = False) -> mqtt.Client:
    try:
        return broker.client(f"alerts-{uuid.uuid4().hex[:8]}", persistent=persistent)
    except (ValueError, OSError) as exc:  # a password or certificate file that cannot be read
        raise click.ClickException(f"broker settings: {exc}") from None


def _unreachable(broker: BrokerConfig) -> str:
    """Where the broker was looked for, and what to check."""
    hint = (
        "; no --login was given, so this was the default local broker: give --login with your login file "
        "(see `lanewatch site broker-config`)"
        if broker == BrokerConfig()
        else "; check host and port in the --config file"
    )
    return f"cannot reach the broker at {broker.host}:{broker.port}{hint}"


def _messages(broker: BrokerConfig, topics: list[str]) -> tuple[mqtt.Client, queue.Queue]:
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = _client(broker)
    client.on_message = lambda _c, _u, message: inbox.put(message)
    if topics:
        client.on_connect = lambda c, _u, _f, reason, _p: c.subscribe([(t, contract.QOS) for t in topics])
    try:
        broker.connect(client, wait=True)
    except OSError as exc:
        raise click.ClickException(f"{_unreachable(broker)} ({exc})") from None
    client.loop_start()
    return client, inbox


def level_word(level: str) -> str:
    return click.style(f"{level.upper():7}", fg=COLOURS[level], bold=level == "red")


def states(site: Site, broker: BrokerConfig, wait_s: float) -> dict[str, contract.LevelState]:
    """The retained level of every zone that has one (waits up to ``wait_s`` for all of them)."""
    return snapshot(site, broker, wait_s)[0]


def snapshot(
    site: Site, broker: BrokerConfig, wait_s: float
) -> tuple[dict[str, contract.LevelState], list[contract.ForwarderStatus]]:
    """Every zone's retained level, and the phone forwarders' retained status."""
    topics = [contract.subscription("level", site=site.site.id), contract.subscription("forwarder", site=site.site.id)]
    client, inbox = _messages(broker, topics)
    found: dict[str, contract.LevelState] = {}
    forwarders: dict[str, contract.ForwarderStatus] = {}
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            complete = len(found) == len(site.zones)
            try:  # once every zone is in, only what already arrived with it
                message = inbox.get(timeout=0.2 if complete else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            kind = contract.parse_topic(message.topic).kind
            decoded = contract.decode(kind, message.payload)
            if isinstance(decoded, contract.LevelState):
                found[decoded.zone] = decoded
            elif isinstance(decoded, contract.ForwarderStatus):
                forwarders[decoded.instance] = decoded
    finally:
        client.disconnect()
        client.loop_stop()
    return found, list(forwarders.values())


def phone_line(site: Site, forwarders: list[contract.ForwarderStatus]) -> Optional[str]:
    """Whether notices reach phones now (the forwarder's own word), for sites whose people have phone channels."""
    if not any(person.notify for person in site.people):
        return None
    running = [f for f in forwarders if f.state == "online"]
    if not running:
        said = "OFFLINE" if forwarders else "NOT RUNNING (no forwarder has reported)"
        return click.style(f"手机通知 phones: forwarder {said}: no notice reaches a phone", fg="red", bold=True)
    parts = []
    for status in running:
        text = f"{status.instance} online, {status.pending} waiting"
        if status.failing:
            text += f", failing: {', '.join(status.failing)}"
        if status.unreachable:
            text += f", UNREACHABLE: {', '.join(status.unreachable)}"
        parts.append(text)
    colour = "yellow" if any(s.failing or s.unreachable for s in running) else "green"
    return click.style(f"手机通知 phones: {'; '.join(parts)}", fg=colour)


def state_lines(site: Site, found: dict[str, contract.LevelState]) -> Iterator[str]:
    tz = ZoneInfo(site.site.timezone)
    yield f"{'zone':16} {'level':7} {'occupancy':>17} {'±':>6}  {'as of':8}  {'coverage':>8}  {'since':16}  reason"
    for zone in site.zones:
        state = found.get(zone.id)
        indent = {"area": "", "grid2": "  ", "grid3": "    "}[zone.kind]
        name = f"{indent}{zone.id}"
        if state is None:
            yield f"{name:16} {'-':7} {'':>17} {'':>6}  {'':8}  {'':>8}  {'':16}  no level published yet"
            continue
        yield _state_line(state, tz, name)


def _state_line(state: contract.LevelState, tz: ZoneInfo, name: str = "") -> str:
    occupancy = f"{'?' if state.occupancy is None else f'{state.occupancy:,}'} / {state.capacity:,}"
    band = f"±{state.band:,}" if state.band else ""
    since = state.since.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    as_of = state.time.astimezone(tz).strftime("%H:%M:%S")
    return (f"{name or state.zone:16} {level_word(state.level)} {occupancy:>17} {band:>6}  {as_of:8}  "
            f"{state.coverage:>8.0%}  {since:16}  {state.reason}")  # fmt: skip


def state_json(site: Site, found: dict[str, contract.LevelState]) -> list[dict[str, Any]]:
    """Every zone, in the inventory's order, with its names and its retained state (None: none yet)."""
    return [
        {"zone": zone.id, "name": {"zh": zone.name.zh, "en": zone.name.en}, "kind": zone.kind,
         "state": json.loads(contract.encode(found[zone.id])) if zone.id in found else None}
        for zone in site.zones
    ]  # fmt: skip


@dataclass(frozen=True)
class Line:
    """A line for the watcher: a notice (``status`` False) or the connection's state and the levels the
    broker kept (``status`` True: for the person at the screen, not for scripts reading notices)."""

    text: str
    status: bool = False


def watch(
    site: Site, broker: BrokerConfig, zone: Optional[str], count: Optional[int], remind_s: float = REMIND_S
) -> Iterator[Line]:
    """One line (two with the text) per notice for ``zone`` and the zones inside it, as they arrive; and
    the connection's state, so that silence never passes for calm: when the broker is lost (nothing can
    arrive then, and every ``remind_s`` it says so again) and when it is back, with every zone's level
    as the broker kept it. The session outlives short losses: notices sent meanwhile arrive on return."""
    tz = ZoneInfo(site.site.timezone)
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    topics = [
        contract.subscription("zone_notice", site=site.site.id),
        contract.subscription("level", site=site.site.id),
    ]

    def connected(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            events.put(("refused", reason))
            return
        client.subscribe([(topic, contract.QOS) for topic in topics])
        events.put(("up", None))

    client = _client(broker, persistent=True)
    client.on_connect = connected
    client.on_disconnect = lambda _c, _u, _f, reason, _p: events.put(("down", reason))
    client.on_connect_fail = lambda _c, _u: events.put(("down", None))
    client.on_message = lambda _c, _u, message: events.put(("message", message))
    client.reconnect_delay_set(1, 10)
    broker.connect(client, session_expiry_s=SESSION_S)
    client.loop_start()
    seen: set[str] = set()
    up, lost, reminded = False, None, 0.0  # lost: since when (monotonic) the broker is out of reach
    where = f"{broker.host}:{broker.port}"
    try:
        while count is None or len(seen) < count:
            try:
                kind, value = events.get(timeout=0.5)
            except queue.Empty:
                if lost is not None and time.monotonic() - reminded >= remind_s:
                    reminded = time.monotonic()
                    away = f"{(reminded - lost) / 60:.0f} min"
                    text = f"still no broker at {where} since {_clock(lost, tz)} ({away}): NO NOTICES CAN ARRIVE"
                    yield Line(_alarm(text), status=True)
                continue
            if kind == "refused":
                raise click.ClickException(f"the broker at {where} refused this login ({value}): check the username "
                                           "and password file in --config")  # fmt: skip
            if kind == "up" and not up:
                back = f" after {(time.monotonic() - lost) / 60:.1f} min away" if lost is not None else ""
                up, lost = True, None
                text = f"● connected to {where} at {datetime.now(tz):%H:%M:%S}{back}; levels now:"
                yield Line(click.style(text, fg="green"), status=True)
            elif kind == "down" and lost is None:
                what = "LOST" if up else "cannot reach"
                up, lost = False, time.monotonic()
                reminded = lost
                text = f"✖ {what} the broker at {where} at {_clock(lost, tz)}: NO NOTICES CAN ARRIVE until it is back"
                yield Line(_alarm(text + " (retrying)"), status=True)
            elif kind == "message":
                line = _received(site, value, zone, seen, tz)
                if line is not None:
                    yield line
    finally:
        _close(client, broker)


def _received(
    site: Site, message: mqtt.MQTTMessage, zone: Optional[str], seen: set[str], tz: ZoneInfo
) -> Optional[Line]:
    """What a watcher shows of one message: a notice once, a zone's kept level on (re)connecting."""
    try:
        kind = contract.parse_topic(message.topic).kind
        decoded = contract.decode(kind, bytes(message.payload))
    except contract.ContractError as exc:
        return Line(click.style(f"(ignored a malformed message on {message.topic}: {exc})", dim=True), status=True)
    if zone is not None and not site.contains(zone, getattr(decoded, "zone", None)):
        return None
    if isinstance(decoded, contract.LevelState):  # live level changes come as notices too
        return Line("  " + _state_line(decoded, tz), status=True) if message.retain else None
    assert isinstance(decoded, contract.DiversionNotice)
    if decoded.id in seen:
        return None
    seen.add(decoded.id)
    return Line(notice_line(site, decoded, tz))


def _alarm(text: str) -> str:
    return "\a" + click.style(text, fg="red", bold=True)


def _clock(monotonic: float, tz: ZoneInfo) -> str:
    return (datetime.now(tz) - timedelta(seconds=time.monotonic() - monotonic)).strftime("%H:%M:%S")


def _close(client: mqtt.Client, broker: BrokerConfig) -> None:
    """Disconnect, and let the broker drop the session (nobody will come back for its notices)."""
    properties = None
    if broker.v5:
        properties = mqtt.Properties(mqtt.PacketTypes.DISCONNECT)
        properties.SessionExpiryInterval = 0
    client.disconnect(properties=properties)
    client.loop_stop()


def notice_line(site: Site, notice: contract.DiversionNotice, tz: ZoneInfo) -> str:
    when = notice.time.astimezone(tz).strftime("%H:%M:%S")
    name = site.zone(notice.zone).name
    numbers = f"{notice.occupancy:,}/{notice.capacity:,}" if notice.occupancy is not None else "no data"
    gates = {e.id: e.name for e in site.entrances}

    def named(ids: list[str], names: dict[str, Any]) -> str:  # the names people know, not ids
        return ", ".join(f"{names[i].zh} {names[i].en}" if i in names else i for i in ids)

    zones = {z.id: z.name for z in site.zones}
    actions = []
    if notice.actions.close_inbound:
        actions.append("close " + named(notice.actions.close_inbound, gates))
    if notice.actions.meter_inbound:
        actions.append("meter " + named(notice.actions.meter_inbound, gates))
    if notice.actions.divert_to:
        actions.append("divert to " + named(notice.actions.divert_to, zones))
    if notice.kind == "predicted_red":
        word = click.style("FORECAST RED", fg="magenta", bold=True)
        state = f"now {notice.level}, {notice.reason}"
    elif notice.level == "unknown" or notice.trend == "unknown":
        word, state = level_word(notice.level), f"was {notice.previous_level}"
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
