"""The entrance sign over a real serial line (a pseudo-terminal pair): acknowledged, retried, or failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from edge_agent.config import SignConfig
from edge_agent.sign import (
    ProtocolError,
    SignDriver,
    SignLink,
    SimulatedSign,
    decode,
    encode,
    escape,
    notice_frame,
    unescape,
)
from lanewatch import contract as c
from tests.conftest import wait_until
from tests.samples import samples

ZH = "南后街已满，请暂停进入，前往安民巷、宫巷"
EN = "Nanhou St is full: please wait, or visit Anmin & Gong Alleys, 50% less crowded*"


@pytest.fixture
def sign() -> Iterator[SimulatedSign]:
    simulated = SimulatedSign()
    yield simulated
    simulated.close()


def test_frames_carry_a_checksum_and_any_text_round_trips() -> None:
    frame = notice_frame(7, "red", ZH, EN)
    assert frame.startswith(b"$MSG,7,R,")
    assert frame.endswith(b"\r\n")
    decoded = decode(frame)
    assert decoded.command == "MSG"
    assert [unescape(f) for f in decoded.fields] == ["7", "R", ZH, EN]
    assert escape("a,b*c$d%e\r\n") == "a%2Cb%2Ac%24d%25e%0D%0A"


def test_a_damaged_frame_is_detected() -> None:
    frame = bytearray(encode("PING", "1"))
    frame[3] ^= 0x01  # one bit flipped on the wire
    with pytest.raises(ProtocolError, match="bad checksum"):
        decode(bytes(frame))
    with pytest.raises(ProtocolError, match="not a frame"):
        decode(b"hello\r\n")


def test_text_too_long_for_the_sign_is_refused() -> None:
    with pytest.raises(ProtocolError, match="shorten the template"):
        notice_frame(1, "red", "满" * 100, "ok")


def test_a_notice_reaches_the_sign_and_is_acknowledged(sign: SimulatedSign) -> None:
    link = SignLink(sign.port, timeout=0.5)
    try:
        assert link.show("red", ZH, EN)
        assert sign.displayed == ("R", ZH, EN)
        assert link.clear()
        assert sign.displayed is None
        assert link.ping()
        assert link.state == "ok"
    finally:
        link.close()


def test_a_sign_that_does_not_answer_is_retried_then_failed_then_recovers(sign: SimulatedSign) -> None:
    link = SignLink(sign.port, timeout=0.2, retries=2)
    try:
        sign.silent = True
        assert not link.show("yellow", ZH, EN)
        assert link.state == "failed"
        assert link.failures == 1
        assert sign.displayed is None
        sign.silent = False  # power is back
        assert link.show("yellow", ZH, EN)
        assert link.state == "ok"
        assert sign.displayed == ("Y", ZH, EN)
    finally:
        link.close()


def test_a_refused_frame_is_sent_again(sign: SimulatedSign) -> None:
    """The sign NAKs a frame damaged on the line; the retry gets through."""
    link = SignLink(sign.port, timeout=0.5, retries=1)
    original_write = link.serial.write
    damaged = []

    def flaky_write(data: bytes) -> int | None:
        if not damaged:  # the first transmission loses a bit
            damaged.append(data)
            data = data.replace(b"MSG", b"MSH", 1)
        return original_write(data)

    link.serial.write = flaky_write  # type: ignore[method-assign]
    try:
        assert link.show("green", "畅通", "Open")
        assert sign.received == 2
        assert sign.displayed == ("G", "畅通", "Open")
    finally:
        link.close()


def test_a_missing_serial_port_is_named() -> None:
    with pytest.raises(serial.SerialException, match="/dev/ttyNOPE"):
        SignLink("/dev/ttyNOPE")


def test_the_example_in_the_protocol_doc_is_valid() -> None:
    from tests.conftest import REPO

    doc = (REPO / "docs" / "sign-protocol.md").read_text(encoding="utf-8")
    for line in [row for row in doc.splitlines() if row.startswith("$")]:
        decode(line.encode("utf-8"))


def test_sign_sim_command_shows_what_it_receives() -> None:
    import signal
    import subprocess
    import sys
    from pathlib import Path

    lanewatch = Path(sys.executable).with_name("lanewatch")
    sim = subprocess.Popen([str(lanewatch), "agent", "sign-sim"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    assert sim.stdout is not None
    port = sim.stdout.readline().strip()
    link = SignLink(port, timeout=1.0)
    try:
        assert link.show("red", ZH, "Full")
        assert sim.stdout.readline().strip() == f"[R] {ZH} | Full"
    finally:
        link.close()
        sim.send_signal(signal.SIGINT)
        sim.wait(timeout=10)
    assert sim.returncode == 0


def test_a_sign_that_is_missing_at_start_never_stops_the_device_and_shows_the_newest_notice_once_plugged_in(
    tmp_path: Path,
) -> None:
    """No /dev/ttyUSB0 when the agent starts (unplugged, not yet wired): the driver starts anyway with the
    sign `failed`, keeps the newest notice, and shows it once the port is there."""
    link = tmp_path / "ttyUSB0"  # where the sign will appear (a symlink to a pty, as udev makes one)
    SignDriver.REOPEN_S = 0.2
    driver = SignDriver(SignConfig(id="sign-wenru-west", port=str(link), timeout_s=0.3, retries=1))
    sign = SimulatedSign()
    try:
        assert driver.state == "failed"
        notice = samples()["entrance_notice"]
        driver.notice(c.encode(notice))
        link.symlink_to(sign.port)  # plugged in
        assert wait_until(lambda: sign.displayed is not None, seconds=10)
        assert sign.displayed is not None
        assert sign.displayed[2] == notice.text.en
        assert driver.state == "ok"
    finally:
        driver.close()
        sign.close()
        SignDriver.REOPEN_S = 10.0
