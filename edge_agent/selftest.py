"""``lanewatch agent selftest``: what a technician checks after installing or replacing a device.

Each check says pass, fail or warn, what it saw, and for a failure what to do. The camera's frame is
used for the timed inference and never written anywhere.
"""

from __future__ import annotations

import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

from edge_agent.config import AgentConfig

Outcome = Literal["pass", "fail", "warn"]


@dataclass(frozen=True)
class Check:
    name: str
    outcome: Outcome
    detail: str
    hint: str = ""

    def line(self) -> str:
        text = f"{self.outcome.upper():4} {self.name}: {self.detail}"
        return text + (f"\n     -> {self.hint}" if self.hint else "")


def run_checks(config: AgentConfig, timeout: float = 10.0) -> Iterator[Check]:
    if config.source.startswith("serial:"):
        yield _counter(config.source[len("serial:") :], timeout)
    else:
        camera, frame = first_frame(config, timeout)
        yield camera
        yield _model(config, frame)
        yield _licence(config)
    yield _storage(config)
    yield _broker(config, timeout)
    yield _clock()
    if config.sign is not None:
        yield _sign(config)


def first_frame(config: AgentConfig, timeout: float) -> tuple[Check, Optional[np.ndarray]]:
    """One frame from the configured source, and the check saying how that went."""
    check, frames = some_frames(config, timeout, 1)
    return check, frames[0] if frames else None


def some_frames(config: AgentConfig, timeout: float, count: int) -> tuple[Check, list[np.ndarray]]:
    """Up to ``count`` consecutive frames from the configured source within ``timeout`` (at least one),
    and the check saying how that went."""
    from edge_agent.sources import SourceError, open_source

    hint = "check the cable or the stream URL and the source setting; `v4l2-ctl --list-devices` lists cameras"
    try:
        source = open_source(config.source, realtime=False, backoff=(0.5, 2.0))
    except SourceError as exc:
        return Check("camera", "fail", str(exc), hint), []
    frames: list[np.ndarray] = []
    done = threading.Event()

    def take() -> None:
        for frame in source:
            frames.append(frame.image)
            if len(frames) >= count or done.is_set():
                break

    reader = threading.Thread(target=take, daemon=True)
    reader.start()
    reader.join(timeout)
    done.set()
    source.close()
    if not frames:
        return Check("camera", "fail", f"no frame from {config.source} within {timeout:.0f} s", hint), []
    height, width = frames[0].shape[:2]
    return Check("camera", "pass", f"{width}x{height} frame from {config.source}"), list(frames[:count])


def _counter(port: str, timeout: float) -> Check:
    import serial

    from edge_agent.serial_counter import SerialCounter

    hint = "check the counter's cable, power and baud rate (docs/counter-protocol.md)"
    try:
        counter = SerialCounter(port)
    except serial.SerialException as exc:
        return Check("counter", "fail", str(exc), hint)
    deadline = time.monotonic() + timeout
    try:
        for report in counter.reports():
            if report is not None:
                return Check("counter", "pass", f"reports arriving on {port}")
            if time.monotonic() > deadline:
                break
    finally:
        counter.close()
    return Check("counter", "fail", f"no valid report on {port} within {timeout:.0f} s", hint)


def _model(config: AgentConfig, frame: Optional[np.ndarray]) -> Check:
    from edge_agent.detector import Detector, ModelError

    try:
        detector = Detector(str(config.model), num_threads=config.threads, model_format=config.model_format)
    except ModelError as exc:
        return Check("model", "fail", str(exc), "copy the model to the device and set `model:` to its path")
    image = frame if frame is not None else np.zeros((480, 640, 3), np.uint8)
    detector.detect(image)  # the first inference allocates; time the second
    started = time.perf_counter()
    people = len(detector.detect(image))
    ms = 1000 * (time.perf_counter() - started)
    source = "the camera's frame" if frame is not None else "a blank frame (no camera)"
    return Check(
        "model", "pass", f"{detector.name} ({detector.format}) ran in {ms:.0f} ms on {source}, {people} people"
    )


def _licence(config: AgentConfig) -> Check:
    """The model's licence: a site must know whether it may run it (see edge_agent.modelinfo)."""
    from edge_agent.modelinfo import model_info

    assert config.model is not None
    info = model_info(config.model)
    if not info.known:
        return Check("licence", "warn", info.line(), "state it in model.yaml beside the model (licence:, source:)")
    if info.allows.startswith("permissive"):
        return Check("licence", "pass", info.line())
    return Check("licence", "warn", info.line(), "make sure the site's use is allowed; README.md, 'Models'")


def _storage(config: AgentConfig) -> Check:
    from edge_agent.outbox import Outbox

    try:
        box = Outbox(config.state_dir / "outbox.db", config.outbox.max_messages, config.outbox.max_age_h * 3600)
    except (OSError, ValueError) as exc:
        return Check("storage", "fail", f"{config.state_dir}: {exc}", "make state_dir writable by the agent's user")
    detail = f"outbox in {config.state_dir}: {box.depth()} waiting, {box.dropped()} dropped so far"
    box.close()
    return Check("storage", "pass", detail)


def _broker(config: AgentConfig, timeout: float) -> Check:
    """Log in as the agent does (its protocol, TLS, password and certificate), as ``<device>:selftest``."""
    broker = config.broker
    where = f"{broker.host}:{broker.port} (MQTT {broker.protocol})"
    try:
        client = broker.client("selftest")
    except (ValueError, OSError) as exc:
        return Check("broker", "fail", str(exc), "check the broker section: password and certificate files")
    answer: dict[str, object] = {}

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        answer.setdefault("reason", reason)

    def on_disconnect(*_: object) -> None:
        answer.setdefault("reason", None)  # dropped before any answer

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        broker.connect(client, wait=True)
    except OSError as exc:
        return Check("broker", "fail", f"{where}: {exc}", "check broker.host/port, the network, and the firewall")
    client.loop_start()
    deadline = time.monotonic() + timeout
    while "reason" not in answer and time.monotonic() < deadline:
        time.sleep(0.05)
    reason = answer.get("reason")
    client.disconnect()
    client.loop_stop()
    if reason is not None and not reason.is_failure:  # type: ignore[attr-defined]
        return Check("broker", "pass", f"connected to {where}" + (" with TLS" if broker.ca_file else ""))
    if reason is not None:
        said, hint = f"refused: {reason}", "check the username and password file for this device"
    elif broker.ca_file is None:
        said = "the connection was dropped before the broker answered"
        hint = ("a site's broker (`site broker-config`) speaks TLS only: set broker.ca_file, cert_file, key_file, "
                "username and password_file (a device bundle fills them in)")  # fmt: skip
    else:
        said = "the connection was dropped before the broker answered"
        hint = "check that ca_file is the site's CA and cert_file/key_file were issued to this device's username"
    return Check("broker", "fail", f"{where} {said}", hint)


def _clock() -> Check:
    from edge_agent.agent import _clock_synced

    synced = _clock_synced()
    if synced:
        return Check("clock", "pass", "synchronised by systemd-timesyncd")
    if synced is None:
        return Check(
            "clock", "warn", "synchronisation unknown (no systemd-timesyncd)", "make sure NTP runs on this device"
        )
    return Check(
        "clock", "fail", "not synchronised", "`sudo timedatectl set-ntp true`, and check that NTP is reachable"
    )


def _sign(config: AgentConfig) -> Check:
    import serial

    from edge_agent.sign import SignLink

    sign = config.sign
    assert sign is not None
    try:
        link = SignLink(sign.port, sign.baudrate, sign.timeout_s, sign.retries)
    except serial.SerialException as exc:
        return Check(
            "sign", "fail", str(exc), "check sign.port (ls /dev/ttyUSB* /dev/ttyAMA*) and permissions (dialout)"
        )
    try:
        answered = link.ping()
    except (serial.SerialException, OSError, termios.error) as exc:  # unplugged between open and ping
        answered = False
        why = f" ({exc})"
    else:
        why = ""
    link.close()
    if answered:
        return Check("sign", "pass", f"{sign.id} answered on {sign.port}")
    return Check(
        "sign",
        "fail",
        f"{sign.id} did not answer on {sign.port}{why}",
        "check the cable, the sign's power and sign.baudrate",
    )
