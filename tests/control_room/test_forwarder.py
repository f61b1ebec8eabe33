"""`lanewatch alerts forward`: notices to phones, on real HTTP servers on loopback that speak each channel's
format (WeChat Work and DingTalk robots, an SMS gateway, a webhook), through the site's broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.phones import PhoneChannels
from harness.servers import Mosquitto
from lanewatch import contract
from tests.conftest import EXAMPLE_SITE, close, connected, run_cli, wait_until
from tests.samples import samples

LANEWATCH = str(Path(sys.executable).with_name("lanewatch"))
OFFICER, LANE_HEAD, MERCHANTS = "officer-wu", "staff-nanhou-north", "staff-nanhou-merchants"
OFFICER_MOBILE = "+8613800000001"
NOTIFY = {
    OFFICER: [{"channel": "nanhou-group"}, {"channel": "sms", "to": OFFICER_MOBILE}],
    LANE_HEAD: [{"channel": "nanhou-group"}, {"channel": "dingtalk"}],
    MERCHANTS: [{"channel": "merchants-hook"}],
}


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[PhoneChannels]:
    with PhoneChannels(tmp_path / "secrets", slow_s=3.0) as served:
        yield served


def site_with_phones(tmp_path: Path) -> Path:
    """The example site, with phone channels for Nanhou Street's officer, lane head and merchants."""
    data = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    for person in data["people"]:
        if person["id"] in NOTIFY:
            person["notify"] = NOTIFY[person["id"]]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def forwarder_config(tmp_path: Path, broker: Mosquitto, phones: PhoneChannels, **settings: Any) -> Path:
    config = {
        "broker": broker.section("forwarder", keepalive_s=5),
        "state_dir": str(tmp_path / "forwarder"),
        "channels": {"nanhou-group": phones.channel("wecom"), "dingtalk": phones.channel("dingtalk"),
                     "sms": phones.channel("sms"), "merchants-hook": phones.channel("webhook")},
        "first_retry_s": 1.0, "max_retry_s": 10.0, "unreachable_after_s": 15.0, **settings,
    }  # fmt: skip
    path = tmp_path / "forwarder.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start(site: Path, config: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([LANEWATCH, "alerts", "forward", "--site", str(site), "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def notice(n: int) -> contract.DiversionNotice:
    sample = samples()["zone_notice"]
    assert isinstance(sample, contract.DiversionNotice)
    return sample.model_copy(update={"id": uuid.UUID(int=1000 + n).hex, "to": [OFFICER, LANE_HEAD, MERCHANTS,
                                                                            "sign-nanhou-north"]})  # fmt: skip


def notice_ids(phones: PhoneChannels, kind: str) -> list[str]:
    """The notice each accepted message carries (its id for the webhook, its id's number for SMS, its text)."""
    found = []
    for message in phones.received(kind):
        if kind == "webhook":
            found.append(message["notice"]["id"])
        elif kind == "sms":
            found.append(message["id"].split("-")[0])
        else:
            found.append(message["text"]["content"])
    return found


def phone_state(site: Path, broker: Mosquitto) -> str:
    """What `lanewatch alerts state` tells the control room about the phones."""
    login = broker.files.folder / "logins" / "control-room" / "login.yaml"
    result = run_cli("alerts", "state", "--site", str(site), "--login", str(login), "--wait", "3")
    assert result.exit_code == 0, result.output
    return result.output


def publish(broker: Mosquitto, *notices: contract.DiversionNotice) -> None:
    aggregator = connected(broker, "aggregator", "test-notices")
    try:
        for item in notices:
            aggregator.publish(contract.topic_for(item), contract.encode(item), qos=1).wait_for_publish(10)
    finally:
        close(aggregator)


def test_each_channel_gets_the_notice_once_in_its_own_format(
    fresh_mosquitto: Mosquitto, phones: PhoneChannels, tmp_path: Path
) -> None:
    site, config = site_with_phones(tmp_path), forwarder_config(tmp_path, fresh_mosquitto, phones)
    process = start(site, config, tmp_path / "forwarder.log")
    try:
        assert wait_until(lambda: "forwarding the notices" in (tmp_path / "forwarder.log").read_text(), 30)
        first = notice(1)
        publish(fresh_mosquitto, first, first)  # the second: a QoS 1 redelivery, or the aggregator again
        assert wait_until(lambda: all(phones.received(kind) for kind in ("wecom", "dingtalk", "sms", "webhook")))
        time.sleep(2)  # anything doubled would have arrived by now
        # the control room sees that notices reach phones
        assert wait_until(lambda: "手机通知 phones: forwarder online, 0 waiting" in phone_state(site, fresh_mosquitto))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, (tmp_path / "forwarder.log").read_text()
    # ... and that they do not once it has stopped
    assert "forwarder OFFLINE: no notice reaches a phone" in phone_state(site, fresh_mosquitto)
    # WeChat Work: one message for the group the officer and the lane head share, mentioning the officer's
    # mobile, Chinese first
    (group,) = phones.received("wecom")
    assert group["text"]["mentioned_mobile_list"] == [OFFICER_MOBILE]
    content = group["text"]["content"]
    assert content.startswith("【LaneWatch】南后街 已满 RED 5,612/5,500\n南后街已满")
    assert content.endswith(first.text.en)
    # DingTalk (its signature checked by the robot), SMS to the officer's number, the merchants' webhook
    (ding,) = phones.received("dingtalk")
    assert ding["text"]["content"] == content
    (sms,) = phones.received("sms")
    assert (sms["to"], sms["id"]) == (OFFICER_MOBILE, f"{first.id}-{OFFICER_MOBILE}")
    (hook,) = phones.received("webhook")
    assert hook["notice"] == json.loads(contract.encode(first))
    assert hook["to"] == [MERCHANTS]
    # a receipt per person and channel
    records = run_cli("alerts", "deliveries", "--config", str(config), "--json")
    assert records.exit_code == 0, records.output
    rows = [json.loads(line) for line in records.output.splitlines()]
    assert sorted((row["channel"], row["state"]) for row in rows) == [
        ("dingtalk", "delivered"), ("merchants-hook", "delivered"), ("nanhou-group", "delivered"),
        ("sms", "delivered"),
    ]  # fmt: skip
    assert next(row for row in rows if row["channel"] == "nanhou-group")["people"] == [OFFICER, LANE_HEAD]


@pytest.mark.slow
def test_every_notice_reaches_each_person_once_across_a_kill_and_a_gateway_down_for_two_minutes(
    fresh_mosquitto: Mosquitto, phones: PhoneChannels, tmp_path: Path
) -> None:
    """The SMS gateway fails for two minutes, the forwarder is killed (-9) and started again meanwhile, a
    notice is sent while it is down, a robot says it is busy, the webhook answers too late and then 429:
    in the end every notice reached every channel once, and the officer, whose SMS could not go, was
    reported unreachable, then reached."""
    site, config = site_with_phones(tmp_path), forwarder_config(tmp_path, fresh_mosquitto, phones)
    log = tmp_path / "forwarder.log"
    states: list[dict] = []
    statuses: list[dict] = []
    kinds = ("reach", "forwarder")
    watcher = connected(fresh_mosquitto, "control-room", "reach",
                        subscribe=[contract.subscription(kind, site="sanfang-qixiang") for kind in kinds],
                        on_message=lambda _c, _u, m: (statuses if "/forwarder/" in m.topic else states).append(
                            json.loads(m.payload)))  # fmt: skip
    phones.mode.update(sms="fail", wecom="busy", webhook="slow")  # webhook: answers after its timeout
    down_since = time.monotonic()
    process = start(site, config, log)
    try:
        assert wait_until(lambda: "forwarding the notices" in log.read_text(), 30)
        publish(fresh_mosquitto, notice(1), notice(2))
        # killed once DingTalk's two are recorded: a kill between a robot's answer and the record would send
        # that one again (robots cannot drop a repeat; README says so)
        assert wait_until(lambda: log.read_text().count("delivered on dingtalk") == 2)
        phones.mode.update(wecom="ok", webhook="busy")  # now 429 with Retry-After
        process.send_signal(signal.SIGKILL)
        process.wait()
        # the control room learns at once that no phone gets anything now (the Last Will)
        assert wait_until(lambda: statuses and statuses[-1]["state"] == "offline", 30), statuses
        publish(fresh_mosquitto, notice(3))  # kept by the broker for the forwarder's session
        process = start(site, config, log)
        assert wait_until(lambda: any(s["person"] == OFFICER and s["state"] == "unreachable" for s in states), 60)
        officer = next(s for s in states if s["person"] == OFFICER and s["state"] == "unreachable")
        assert officer["error"].startswith("sms: HTTP 500")
        phones.mode["webhook"] = "ok"
        assert wait_until(lambda: time.monotonic() - down_since >= 120, 130)
        phones.mode["sms"] = "ok"
        assert wait_until(lambda: len(phones.received("sms")) == 3, 60)
        assert wait_until(lambda: [s for s in states if s["person"] == OFFICER][-1]["state"] == "reached", 30)
        time.sleep(3)  # anything doubled would have arrived by now
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        close(watcher)
    sent = {notice(n).id for n in (1, 2, 3)}
    for kind in ("sms", "webhook"):
        assert Counter(notice_ids(phones, kind)) == Counter(sent), kind
    assert phones.attempts["sms"] > 3  # retried while it failed
    assert phones.attempts["webhook"] > 3 or phones.repeats["webhook"] > 0  # timed out, sent again, taken once
    for kind in ("wecom", "dingtalk"):
        assert len(phones.received(kind)) == 3, kind
    said = log.read_text()
    assert "webhook: HTTP 429" in said  # told to wait, and waited
    assert "wecom: rate limited (errcode 45009)" in said
    latest = {s["person"]: s for s in states}
    assert latest[OFFICER]["state"] == "reached"
    assert latest[OFFICER]["pending"] == 0


def test_a_channel_the_configuration_lacks_or_an_sms_without_a_number_is_named(
    mosquitto: Mosquitto, phones: PhoneChannels, tmp_path: Path
) -> None:
    site = site_with_phones(tmp_path)
    data = yaml.safe_load(site.read_text(encoding="utf-8"))
    for person in data["people"]:
        if person["id"] == "officer-lin":
            person["notify"] = [{"channel": "sms"}, {"channel": "wechat-lin"}]
    site.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    config = forwarder_config(tmp_path, mosquitto, phones)
    result = run_cli("alerts", "forward", "--site", str(site), "--config", str(config))
    assert result.exit_code == 1
    assert f"{config}: officer-lin: channel 'sms' sends SMS: give their number as `to:`" in result.stderr
    assert f"{config}: officer-lin: channel 'wechat-lin' is not in the forwarder's channels" in result.stderr


def test_the_example_forwarder_serves_every_channel_the_example_site_names() -> None:
    from control_room.forwarder import ForwarderConfig, check_channels
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import load_model

    config = load_model(EXAMPLE_SITE.with_name("forwarder.yaml"), ForwarderConfig)
    site = load_site(EXAMPLE_SITE)
    assert any(person.notify for person in site.people)
    assert check_channels(site, config) == []
