"""The phone channels a notice is forwarded on, each in its documented format, and what their answers mean.

- ``wecom``: a WeChat Work (企业微信) group robot, ``POST <url>?key=KEY`` with ``{"msgtype": "text",
  "text": {"content": ..., "mentioned_mobile_list": [...]}}``; it answers ``{"errcode": 0}``, and 45009 when
  the robot's 20 messages a minute are used up.
- ``dingtalk``: a DingTalk (钉钉) custom robot, ``POST <url>?access_token=TOKEN&timestamp=T&sign=S`` (the
  signature: base64 HMAC-SHA256 of ``"T\\nSECRET"`` with the secret, when the robot is set to sign) with
  ``{"msgtype": "text", "text": {"content": ...}, "at": {"atMobiles": [...]}}``; ``{"errcode": 0}``, and
  130101 when it is sent too fast.
- ``sms``: an SMS gateway's HTTP API: ``POST <url>`` with ``{"to": NUMBER, "text": ..., "id": ...}`` and
  ``Authorization: Bearer TOKEN``; any 2xx is accepted; ``id`` lets the gateway drop a repeat.
- ``webhook``: any HTTP endpoint: ``POST <url>`` with the notice (the contract's JSON) and who it is for,
  signed ``X-LaneWatch-Signature: sha256=HMAC(secret, body)`` when a secret is given.

A 429 (or a robot's rate-limit code) waits for ``Retry-After`` when the answer gives one. Secrets are read
from files named in the forwarder's configuration, never from the inventory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import requests
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from lanewatch import contract

ChannelType = Literal["wecom", "dingtalk", "sms", "webhook"]
#: Robots' own codes for "too many messages": wait, then send again.
RATE_LIMIT_CODES = {45009, 130101}
#: Group robots take a text of at most 2,048 bytes (WeChat Work) / 20,000 (DingTalk): notices fit.
MAX_TEXT_BYTES = 2048


class ChannelConfig(BaseModel):
    """One channel of the forwarder: where it posts, and the files holding its secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ChannelType
    url: HttpUrl
    key_file: Optional[Path] = Field(default=None, description="wecom: the robot's key; dingtalk: its access token; "
                                     "sms: the gateway's bearer token")  # fmt: skip
    secret_file: Optional[Path] = Field(default=None, description="dingtalk: the signing secret; webhook: the "
                                        "HMAC secret")  # fmt: skip
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @property
    def group(self) -> bool:
        """One message per notice for everyone it reaches here (a group robot, a webhook), not one per number."""
        return self.type != "sms"


@dataclass(frozen=True)
class Outcome:
    """What a channel's answer means: delivered, or why not and when to try again (None: use the backoff)."""

    delivered: bool
    error: str = ""
    retry_after_s: Optional[float] = None


def read_secret(path: Optional[Path], what: str) -> str:
    if path is None:
        raise ValueError(f"{what} is not set")
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{what} {path} is empty")
    return value


def message_text(notice: contract.DiversionNotice, zone_name: str) -> str:
    """What a phone shows: Chinese first, then English; the zone and level lead."""
    head = f"【LaneWatch】{zone_name} {LEVEL_ZH[notice.level]} {notice.level.upper()}"
    numbers = f" {notice.occupancy:,}/{notice.capacity:,}" if notice.occupancy is not None else ""
    text = f"{head}{numbers}\n{notice.text.zh}\n{notice.text.en}"
    return _fit(text, MAX_TEXT_BYTES)


LEVEL_ZH = {"green": "畅通", "yellow": "拥挤", "red": "已满", "unknown": "未知"}


def send(
    channel: ChannelConfig,
    notice: contract.DiversionNotice,
    text: str,
    people: list[str],
    numbers: list[str],
    session: requests.Session,
) -> Outcome:
    """Post one message; the answer read as the channel documents it."""
    try:
        request = _request(channel, notice, text, people, numbers)
    except ValueError as exc:  # a secret file missing or empty: say so, and try again later
        return Outcome(False, str(exc))
    url, body, headers = request
    try:
        answer = session.post(url, data=body, headers=headers, timeout=channel.timeout_s)
    except requests.RequestException as exc:
        return Outcome(False, f"{channel.type}: {type(exc).__name__}: {_short(str(exc))}")
    return _read(channel, answer)


def _request(
    channel: ChannelConfig, notice: contract.DiversionNotice, text: str, people: list[str], numbers: list[str]
) -> tuple[str, bytes, dict[str, str]]:
    url = str(channel.url)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    payload: dict[str, object]
    if channel.type == "wecom":
        url = _with_query(url, key=read_secret(channel.key_file, "key_file"))
        payload = {"msgtype": "text", "text": {"content": text, "mentioned_mobile_list": numbers}}
    elif channel.type == "dingtalk":
        query = {"access_token": read_secret(channel.key_file, "key_file")}
        if channel.secret_file is not None:
            secret = read_secret(channel.secret_file, "secret_file")
            stamp = str(int(time.time() * 1000))
            digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
            query.update(timestamp=stamp, sign=base64.b64encode(digest).decode())
        url = _with_query(url, **query)
        payload = {"msgtype": "text", "text": {"content": text}, "at": {"atMobiles": numbers, "isAtAll": False}}
    elif channel.type == "sms":
        headers["Authorization"] = f"Bearer {read_secret(channel.key_file, 'key_file')}"
        payload = {"to": numbers[0], "text": text, "id": f"{notice.id}-{numbers[0]}"}
    else:
        payload = {"notice": json.loads(contract.encode(notice)), "to": people, "text": text}
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    if channel.type == "webhook":
        headers["Idempotency-Key"] = notice.id
        if channel.secret_file is not None:
            secret = read_secret(channel.secret_file, "secret_file")
            signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-LaneWatch-Signature"] = f"sha256={signature}"
    return url, body, headers


def _read(channel: ChannelConfig, answer: requests.Response) -> Outcome:
    wait = _retry_after(answer.headers.get("Retry-After"))
    if answer.status_code == 429:
        return Outcome(False, f"{channel.type}: HTTP 429 (too many requests)", wait)
    if not 200 <= answer.status_code < 300:
        return Outcome(False, f"{channel.type}: HTTP {answer.status_code} {_short(answer.text)}", wait)
    if channel.type in ("wecom", "dingtalk"):
        try:
            code = int(answer.json().get("errcode", -1))
            said = str(answer.json().get("errmsg", ""))
        except (ValueError, AttributeError):
            return Outcome(False, f"{channel.type}: an answer that is not the robot's JSON: {_short(answer.text)}")
        if code in RATE_LIMIT_CODES:
            return Outcome(False, f"{channel.type}: rate limited (errcode {code})", wait or 60.0)
        if code != 0:
            return Outcome(False, f"{channel.type}: errcode {code} {_short(said)}")
    return Outcome(True)


def _retry_after(value: Optional[str]) -> Optional[float]:
    try:
        return min(max(float(value), 0.0), 3600.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff will do


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode([*urllib.parse.parse_qsl(parts.query), *params.items()])
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _fit(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[: limit - 3].decode("utf-8", "ignore") + "…"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text[:200]
