"""Replay real traffic through a broker and a running aggregator, and judge the notices it sends.

The traffic (``harness.realtraffic``) comes with every zone's true occupancy, minute by minute, so
the judgement needs no second implementation of the level rules, only their promises:
- every minute at or over the red threshold is red, every minute at or over yellow is at least
  yellow (no missed escalation);
- a zone is red or yellow only while the numbers were at that level's clear threshold within the
  last dwell time (no level held too long);
- no zone goes back to a level it left within its dwell time (no flaps), none is ever unknown while
  every device reports, and each notice's occupancy is the true one;
- no notice sends visitors to a zone that is not green at that moment;
- `predicted red` notices are scored against the red entries that followed them.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Optional

import numpy as np

from aggregator.config import InfluxConfig, LevelsConfig
from aggregator.forecast import Score, score
from aggregator.influx import Database, rows
from harness.miscount import worst_drift
from harness.realtraffic import Traffic, messages
from harness.simulated import Publisher, devices
from lanewatch import contract
from lanewatch.mqttconfig import BrokerConfig
from lanewatch.site.model import Site

CONTROL_ROOM = "control-room"  # the example site's control room, which may read everything


def replay(
    site: Site,
    traffic: Traffic,
    login: Callable[[str], BrokerConfig],
    instance: str = "aggregator-1",
    progress: Optional[Callable[[str], None]] = None,
    settle_s: float = 5.0,
    headcounts: Optional[dict[int, list[contract.Headcount]]] = None,
) -> list[contract.DiversionNotice]:
    """Publish the traffic as the site's devices would (each logged in as itself, ``login(user)`` giving
    the broker settings), and the staff's ``headcounts`` (minute -> counts, each person logged in as
    themselves), and return every zone notice the aggregator sent, as the control room got them."""
    say = progress or (lambda _text: None)
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    desk = login(CONTROL_ROOM)
    listener = desk.client(f"replay-{instance}")
    listener.on_message = lambda _c, _u, m: inbox.put((m.topic, bytes(m.payload)))
    desk.connect(listener, wait=True)
    status_topic = contract.KINDS["status"].template.format(site=site.site.id, instance=instance)
    listener.subscribe([(contract.subscription("zone_notice", site=site.site.id), 1), (status_topic, 1)])
    listener.loop_start()
    publisher = Publisher(login)
    notices: list[contract.DiversionNotice] = []
    stored = 0

    def drain(wait: float) -> bool:
        nonlocal stored
        got = False
        try:
            while True:
                topic, payload = inbox.get(timeout=wait)
                if topic.endswith("/status"):
                    status = contract.decode("status", payload)
                    assert isinstance(status, contract.AggregatorStatus)
                    stored = status.stored
                else:
                    notice = contract.decode("zone_notice", payload)
                    assert isinstance(notice, contract.DiversionNotice)
                    notices.append(notice)
                    got = True
                wait = 0.0
        except queue.Empty:
            return got

    try:
        sent, day, fleet = 0, 24 * 60, devices(site)
        for minute in range(traffic.minutes):
            # Each device is a client of its own, so only a minute's acknowledgements keep the minutes in
            # order at the aggregator, as they are live (where a minute takes a minute).
            sent += publisher.send(messages(traffic, fleet, range(minute, minute + 1)))
            counted = (headcounts or {}).get(minute, [])
            if counted:  # after the minute's windows, as staff report what they see at its end
                sent += publisher.send((contract.topic_for(h), contract.encode(h)) for h in counted)
            if (minute + 1) % day == 0 or minute + 1 == traffic.minutes:
                say(f"day {minute // day + 1}: {sent:,} messages published, {len(notices)} notices so far")
                drain(0.0)
        deadline = time.monotonic() + 600
        while stored < sent and time.monotonic() < deadline:
            drain(0.5)
        if stored < sent:
            raise RuntimeError(f"the aggregator stored {stored:,} of {sent:,} messages in 10 minutes")
        while drain(settle_s):  # the last minute is evaluated once the stream pauses
            pass
    finally:
        publisher.close()
        listener.disconnect()
        listener.loop_stop()
    return sorted(notices, key=lambda n: n.time)


@dataclass
class Judgement:
    minutes: int  # zone-minutes judged
    missed_red: list[str] = field(default_factory=list)
    missed_yellow: list[str] = field(default_factory=list)
    held_too_long: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    flaps: list[str] = field(default_factory=list)
    wrong_occupancy: list[str] = field(default_factory=list)
    bad_diversions: list[str] = field(default_factory=list)
    changes: Counter = field(default_factory=Counter)  # level -> number of changes into it
    warnings: Optional[Score] = None
    worst_drift: Optional[float] = None  # the stored occupancy's largest gap to the truth, share of capacity
    worst_drift_at: str = ""

    @property
    def wrong_level(self) -> int:
        """Zone-minutes at a wrong level: a missed escalation, or a level held without the numbers for it."""
        return len(self.missed_red) + len(self.missed_yellow) + len(self.held_too_long)

    @property
    def false_red(self) -> int:
        """Zone-minutes shown red while the true occupancy was not near red within the dwell time."""
        return sum(1 for entry in self.held_too_long if entry.startswith("still red"))

    @property
    def failures(self) -> list[str]:
        return (self.missed_red + self.missed_yellow + self.held_too_long + self.unknown + self.flaps
                + self.wrong_occupancy + self.bad_diversions)  # fmt: skip

    def lines(self) -> list[str]:
        changes = ", ".join(f"{n} to {level}" for level, n in sorted(self.changes.items()))
        out = [
            f"zone-minutes judged {self.minutes:,}; level changes: {changes}",
            f"wrong level {self.wrong_level:,} zone-minutes ({self.wrong_level / max(1, self.minutes):.2%}): "
            f"missed red {len(self.missed_red):,}, false red {self.false_red:,}"
            + (
                f"; worst drift {self.worst_drift:.0%} of capacity ({self.worst_drift_at})"
                if self.worst_drift is not None
                else ""
            ),
            f"missed red {len(self.missed_red)}, missed yellow {len(self.missed_yellow)}, "
            f"held too long {len(self.held_too_long)}, unknown {len(self.unknown)}, flaps {len(self.flaps)}, "
            f"wrong occupancy {len(self.wrong_occupancy)}, diversions to a zone not green {len(self.bad_diversions)}",
        ]
        if self.warnings is not None:
            out += ["early warning: " + line for line in self.warnings.lines()]
        return out + [f"  {failure}" for failure in self.failures[:20]]


def judge(
    site: Site,
    traffic: Traffic,
    notices: list[contract.DiversionNotice],
    config: LevelsConfig,
    occupancy: Optional[dict[str, np.ndarray]] = None,
    judged_from: int = 0,
) -> Judgement:
    """The notices against the true occupancy; ``occupancy`` (the aggregator's, per minute) gives the drift.
    Only the minutes from ``judged_from`` on are judged (the ones before let the aggregator learn)."""
    changes = [n for n in notices if n.kind == "level_change"]
    judged_start = traffic.minute_end(judged_from) - timedelta(minutes=1)
    minute = {traffic.minute_end(i): i for i in range(traffic.minutes)}
    timeline: dict[str, list[str]] = {}
    for zone in site.zones:
        levels, current = [], "unknown"
        ordered = iter([n for n in changes if n.zone == zone.id])
        upcoming = next(ordered, None)
        for i in range(traffic.minutes):
            while upcoming is not None and upcoming.time <= traffic.minute_end(i):
                current, upcoming = upcoming.level, next(ordered, None)
            levels.append(current)
        timeline[zone.id] = levels
    result = Judgement(minutes=(traffic.minutes - judged_from) * len(site.zones))
    for zone in site.zones:
        rule = config.zones.get(zone.id, config.default)
        dwell = int(rule.dwell_s // 60) + 1
        share = traffic.occupancy[zone.id] / zone.capacity
        levels = timeline[zone.id]
        first = next((i for i, level in enumerate(levels) if level != "unknown"), traffic.minutes)
        for i in range(max(first, judged_from), traffic.minutes):
            at = f"{zone.id} at {traffic.minute_end(i):%Y-%m-%d %H:%M}Z ({share[i]:.0%}, {levels[i]})"
            recent = share[max(0, i - dwell) : i + 1].max()
            if levels[i] == "unknown":
                result.unknown.append(f"unknown: {at}")
            elif share[i] >= rule.red_at and levels[i] != "red":
                result.missed_red.append(f"not red: {at}")
            elif share[i] >= rule.yellow_at and levels[i] not in ("yellow", "red"):
                result.missed_yellow.append(f"not yellow: {at}")
            elif levels[i] == "red" and recent < rule.red_at - rule.clear_margin:
                result.held_too_long.append(f"still red: {at}")
            elif levels[i] == "yellow" and recent < rule.yellow_at - rule.clear_margin:
                result.held_too_long.append(f"still yellow: {at}")
        mine = [n for n in changes if n.zone == zone.id and n.time > judged_start]
        for before, after in zip(mine, mine[1:]):
            if after.level == before.previous_level and after.time - before.time < timedelta(seconds=rule.dwell_s):
                result.flaps.append(f"flap: {zone.id} {before.previous_level}->{before.level}->{after.level} "
                                    f"at {before.time:%m-%d %H:%M} and {after.time:%H:%M}")  # fmt: skip
    for notice in notices:
        if notice.time <= judged_start:
            continue
        if notice.kind == "level_change":
            result.changes[notice.level] += 1
        i = minute.get(notice.time, -1)
        if i < 0:
            result.wrong_occupancy.append(f"notice at {notice.time} is not at a minute of the replay")
            continue
        truth = int(traffic.occupancy[notice.zone][i])
        if notice.occupancy is not None and notice.occupancy != truth:
            result.wrong_occupancy.append(f"{notice.zone} at {notice.time:%m-%d %H:%M}: {notice.occupancy} != {truth}")
        for target in notice.actions.divert_to:
            if timeline[target][i] != "green":
                result.bad_diversions.append(f"{notice.zone} -> {target} ({timeline[target][i]}) at {notice.time}")
    reds = [(n.zone, n.time) for n in changes if n.level == "red" and n.time > judged_start]
    warnings = [(n.zone, n.time) for n in notices if n.kind == "predicted_red" and n.time > judged_start]
    result.warnings = score(reds, warnings, horizon_min=config.forecast_min)
    if occupancy is not None:
        result.worst_drift, result.worst_drift_at = worst_drift(site, traffic, occupancy, judged_from)
    return result


def stored_occupancy(site: Site, traffic: Traffic, url: str, database: str = "lanewatch") -> dict[str, np.ndarray]:
    """Every zone's occupancy as the aggregator stored it in InfluxDB, one value per minute."""
    db = Database(InfluxConfig(url=url, database=database))
    start, end = traffic.minute_end(0), traffic.minute_end(traffic.minutes - 1)
    occupancy = {zone.id: np.zeros(traffic.minutes) for zone in site.zones}
    try:
        for series in db.query(
            f"SELECT last(occupancy) FROM zones WHERE site = '{site.site.id}' AND time >= '{start.isoformat()}' "
            f"AND time <= '{end.isoformat()}' GROUP BY time(1m), zone fill(previous)"
        ):
            zone = series["tags"]["zone"]
            for row in rows(series):
                i = round((row["time"] / 1e9 - start.timestamp()) / 60)
                if zone in occupancy and 0 <= i < traffic.minutes and row["last"] is not None:
                    occupancy[zone][i] = row["last"]
    finally:
        db.close()
    return occupancy
