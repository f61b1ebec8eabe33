"""Every device message (and every headcount) checked against the contract and the inventory before it counts.

The contract (``lanewatch.contract``) checks the payload on its own: JSON, types, bounds, closed
fields. This module adds what only the receiver can know: the site and the device exist, the ids in
the payload match the topic, the device's clock is plausible (a clock far off is measured and
corrected: ``aggregator.clocks``), and the counts are physically possible for the entrance's width.
A headcount must come from a grid officer or staff member of the zone it counts (or of a zone holding
it), for a third-level zone, and must not be from the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Union

from aggregator.clocks import ClockWatch
from aggregator.config import ValidationConfig
from lanewatch import contract
from lanewatch.site.model import Device, Entrance, Site

DEVICE_KINDS = ("count", "heartbeat", "availability")
#: People allowed beyond the flow limit in any stretch of time (a group arriving at once).
FLOW_SLACK = 10
DeviceMessage = Union[contract.CountWindow, contract.Heartbeat, contract.Availability]


class InvalidMessageError(ValueError):
    """A message that must not be stored; the text is the reason, one line, for the log and the dead letter."""


@dataclass(frozen=True)
class Accepted:
    kind: str
    message: DeviceMessage
    device: Device
    entrance: Entrance


class Validator:
    def __init__(self, site: Site, config: ValidationConfig) -> None:
        self.site_id = site.site.id
        self.config = config
        self.devices = {d.id: d for d in site.devices}
        self.entrances = {e.id: e for e in site.entrances}
        self.lines = {d.id: {line.name for line in d.lines} for d in site.devices}
        self.max_future = timedelta(seconds=config.max_future_s)
        self.max_age = timedelta(hours=config.max_age_h)
        self.clocks = ClockWatch(config.clock_tolerance_s)
        self.site = site

    def check_headcount(self, topic: str, payload: bytes, now: datetime) -> contract.Headcount:
        """A headcount fit to anchor its zone, or InvalidMessageError saying what is wrong with it."""
        if len(payload) > contract.MAX_PAYLOAD_BYTES:
            raise InvalidMessageError(f"payload is {len(payload)} bytes; the limit is {contract.MAX_PAYLOAD_BYTES}")
        try:
            kind, ids = contract.parse_topic(topic)
            message = contract.decode("headcount", payload)
        except contract.ContractError as exc:
            raise InvalidMessageError(f"invalid headcount: {exc}") from None
        assert isinstance(message, contract.Headcount)
        if kind != "headcount" or ids["site"] != self.site_id or message.site != self.site_id:
            raise InvalidMessageError(f"a headcount for site {message.site!r} on {topic!r}: not this site's")
        if (message.zone, message.person) != (ids["zone"], ids["person"]):
            raise InvalidMessageError(
                f"zone {message.zone!r} and person {message.person!r} in the payload differ from the topic's"
            )
        zone = self.site.zones_by_id.get(message.zone)
        if zone is None or self.site.children(zone.id):
            raise InvalidMessageError(f"zone {message.zone!r} is not a third-level zone of the inventory")
        holding = [z for z in self.site.zones if self.site.contains(z.id, zone.id)]
        if not any(message.person == z.officer or message.person in z.staff for z in holding):
            raise InvalidMessageError(f"{message.person!r} is not an officer or staff member of {zone.id!r}")
        if message.count > 3 * zone.capacity:
            raise InvalidMessageError(
                f"{message.count} people is more than three times {zone.id}'s capacity ({zone.capacity}): a typo?"
            )
        self._check_time("time", message.time, now)
        return message

    def check(self, topic: str, payload: bytes, now: datetime, live: bool = False) -> Accepted:
        """The decoded message with its device and entrance, or InvalidMessageError with the first rule it breaks.

        ``live``: the message was published with an expiry (a device's heartbeat), so it arrives fresh and
        measures the device's clock; heartbeats replayed from the past (simulators, replays) do not."""
        if len(payload) > contract.MAX_PAYLOAD_BYTES:
            raise InvalidMessageError(f"payload is {len(payload)} bytes; the limit is {contract.MAX_PAYLOAD_BYTES}")
        try:
            kind, ids = contract.parse_topic(topic)
        except contract.ContractError as exc:
            raise InvalidMessageError(str(exc)) from None
        if kind not in DEVICE_KINDS:
            raise InvalidMessageError(f"a {kind} message is not a device message")
        if ids["site"] != self.site_id:
            raise InvalidMessageError(
                f"site {ids['site']!r} in the topic is not this aggregator's site {self.site_id!r}"
            )
        device = self.devices.get(ids["device"])
        if device is None:
            raise InvalidMessageError(f"unknown device {ids['device']!r}: not in the site inventory")
        try:
            message = contract.decode(kind, payload)
        except contract.ContractError as exc:
            raise InvalidMessageError(f"invalid {kind}: {exc}") from None
        assert isinstance(message, (contract.CountWindow, contract.Heartbeat, contract.Availability))
        if message.site != self.site_id:
            raise InvalidMessageError(f"site {message.site!r} in the payload differs from the topic's {self.site_id!r}")
        if message.device != device.id:
            raise InvalidMessageError(
                f"device {message.device!r} in the payload differs from the topic's {device.id!r}"
            )
        entrance = self.entrances[device.entrance]
        if isinstance(message, contract.Heartbeat):
            off = message.time - now
            if abs(off) > self.max_age:
                raise InvalidMessageError(
                    f"time {message.time.isoformat()} is {off.total_seconds() / 3600:+.0f} h off the aggregator's "
                    f"clock, more than validation.max_age_h ({self.config.max_age_h:g} h); fix the device's NTP"
                )
            if live:
                self.clocks.heard(device.id, message.time, now)
        message = _retimed(message, self.clocks.offset(device.id))
        if isinstance(message, contract.CountWindow):
            self._check_count(message, ids["line"], entrance, now)
        elif isinstance(message, contract.Heartbeat):
            self._check_time("time", message.time, now)
        return Accepted(kind, message, device, entrance)

    def _check_count(self, window: contract.CountWindow, topic_line: str, entrance: Entrance, now: datetime) -> None:
        if window.line != topic_line:
            raise InvalidMessageError(f"line {window.line!r} in the payload differs from the topic's {topic_line!r}")
        if window.line not in self.lines[window.device]:
            known = ", ".join(sorted(self.lines[window.device]))
            raise InvalidMessageError(
                f"line {window.line!r} is not a counting line of {window.device} in the inventory ({known})"
            )
        self._check_time("window_end", window.window_end, now)
        seconds = (window.window_end - window.window_start).total_seconds()
        limit = self.max_flow(entrance)
        if window.in_ + window.out > limit * seconds + FLOW_SLACK:
            width = f"a {entrance.width_m:g} m wide entrance" if entrance.width_m else "an entrance"
            raise InvalidMessageError(
                f"{window.in_ + window.out} crossings in {seconds:g} s is more than {limit:g} people/s can pass "
                f"{width}; check the counter"
            )

    def max_flow(self, entrance: Entrance) -> float:
        return max_flow(self.config, entrance)

    def _check_time(self, name: str, when: datetime, now: datetime) -> None:
        if when > now + self.max_future:
            raise InvalidMessageError(
                f"{name} {when.isoformat()} is {(when - now).total_seconds():.0f} s ahead of the aggregator's clock "
                f"(limit {self.config.max_future_s:g} s); check the device's NTP"
            )
        if when < now - self.max_age:
            raise InvalidMessageError(
                f"{name} {when.isoformat()} is older than {self.config.max_age_h:g} h; too late to count "
                "(validation.max_age_h)"
            )


def max_flow(config: ValidationConfig, entrance: Entrance) -> float:
    """The most people per second the entrance can pass, both directions together."""
    if entrance.width_m is None:
        return config.max_flow_per_s
    return config.max_flow_per_m_s * entrance.width_m


def _retimed(message: DeviceMessage, offset: timedelta) -> DeviceMessage:
    """The message with its times moved by the device's clock offset (unchanged when there is none)."""
    if not offset:
        return message
    if isinstance(message, contract.CountWindow):
        return message.model_copy(
            update={"window_start": message.window_start - offset, "window_end": message.window_end - offset}
        )
    if isinstance(message, contract.Heartbeat):
        return message.model_copy(update={"time": message.time - offset})
    return message
