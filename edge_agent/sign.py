"""The entrance sign: a variable-message LED sign on a serial port, driven by the device at its entrance.

Line protocol (UTF-8, one frame per line, documented in ``docs/sign-protocol.md``)::

    $MSG,<seq>,<level>,<zh>,<en>*<CS>\\r\\n    show a notice (level G, Y, R or U)
    $CLR,<seq>*<CS>\\r\\n                    blank the sign
    $PING,<seq>*<CS>\\r\\n                   are you there?
    $ACK,<seq>*<CS>\\r\\n                    the sign did it
    $NAK,<seq>,<reason>*<CS>\\r\\n           the sign refused the frame (bad checksum, too long ...)

``CS`` is the XOR of the UTF-8 bytes between ``$`` and ``*``, as two upper-case hex digits (the
NMEA 0183 checksum, which sign controllers already implement). In text fields ``%``, ``,``, ``*``,
``$``, CR and LF are percent-encoded. The driver waits ``timeout`` seconds for the ACK and sends the
frame again, up to ``retries`` times; a sign that never answers is ``failed`` in the heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import termios
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Optional

import serial

from lanewatch import contract

if TYPE_CHECKING:
    from edge_agent.config import SignConfig

log = logging.getLogger(__name__)

LEVEL_CODES = {"green": "G", "yellow": "Y", "red": "R", "unknown": "U"}
MAX_TEXT_BYTES = 240  # per language, after encoding: what a two-line 64x16 LED module can scroll
_ESCAPES = {"%": "%25", ",": "%2C", "*": "%2A", "$": "%24", "\r": "%0D", "\n": "%0A"}

SignState = Literal["ok", "failed", "none"]


class ProtocolError(ValueError):
    """A frame that is not valid; the message says why (and becomes the NAK reason)."""


def checksum(body: bytes) -> str:
    value = 0
    for byte in body:
        value ^= byte
    return f"{value:02X}"


def escape(text: str) -> str:
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def unescape(text: str) -> str:
    for raw, coded in _ESCAPES.items():
        if raw != "%":
            text = text.replace(coded, raw)
    return text.replace("%25", "%")


def encode(command: str, *fields: str) -> bytes:
    """One frame, ready for the wire."""
    body = ",".join([command, *fields]).encode("utf-8")
    return b"$" + body + b"*" + checksum(body).encode() + b"\r\n"


@dataclass(frozen=True)
class Frame:
    command: str
    fields: tuple[str, ...]


def decode(line: bytes) -> Frame:
    """Check and split one received line (with or without its CR LF)."""
    line = line.strip(b"\r\n")
    if not line.startswith(b"$") or b"*" not in line:
        raise ProtocolError("not a frame: expected $...*CS")
    body, _, given = line[1:].rpartition(b"*")
    if given.decode("ascii", "replace").upper() != checksum(body):
        raise ProtocolError(f"bad checksum {given.decode('ascii', 'replace')}, expected {checksum(body)}")
    try:
        command, *fields = body.decode("utf-8").split(",")
    except UnicodeDecodeError:
        raise ProtocolError("not UTF-8") from None
    return Frame(command, tuple(fields))


def notice_frame(seq: int, level: str, zh: str, en: str) -> bytes:
    fields = [escape(zh), escape(en)]
    for text in fields:
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            raise ProtocolError(f"sign text over {MAX_TEXT_BYTES} bytes: shorten the template")
    return encode("MSG", str(seq), LEVEL_CODES[level], *fields)


class SignLink:
    """The device's side: send a frame, wait for its ACK, retry, and know whether the sign is alive.

    ``port`` is anything pyserial opens: ``/dev/ttyUSB0``, ``/dev/ttyAMA0``, a pty, ``loop://``.
    """

    def __init__(self, port: str, baudrate: int = 9600, timeout: float = 1.0, retries: int = 3) -> None:
        self.port_name, self.timeout, self.retries = port, timeout, retries
        self.serial = serial.serial_for_url(port, baudrate=baudrate, timeout=timeout)
        self.state: SignState = "ok"
        self.failures = 0  # frames that got no ACK after every retry
        self._seq = 0
        self._lock = threading.Lock()

    def show(self, level: str, zh: str, en: str) -> bool:
        """Put a notice on the sign; True once the sign acknowledged it."""
        return self._exchange(lambda seq: notice_frame(seq, level, zh, en))

    def clear(self) -> bool:
        return self._exchange(lambda seq: encode("CLR", str(seq)))

    def ping(self) -> bool:
        return self._exchange(lambda seq: encode("PING", str(seq)))

    def close(self) -> None:
        self.serial.close()

    def _exchange(self, build: Callable[[int], bytes]) -> bool:
        with self._lock:
            self._seq = (self._seq + 1) % 100_000
            frame = build(self._seq)
            for attempt in range(1 + self.retries):
                self.serial.reset_input_buffer()
                self.serial.write(frame)
                self.serial.flush()
                reply = self._reply(self._seq)
                if reply == "ACK":
                    self.state = "ok"
                    return True
                log.warning("sign on %s: %s for frame %d (attempt %d)", self.port_name, reply, self._seq, attempt + 1)
            self.state, self.failures = "failed", self.failures + 1
            return False

    def _reply(self, seq: int) -> str:
        """ACK, or why not: NAK with its reason, a garbled reply, or silence."""
        line = self.serial.readline()  # waits at most ``timeout``
        if not line:
            return "no answer"
        try:
            frame = decode(line)
        except ProtocolError as exc:
            return f"garbled reply ({exc})"
        if frame.fields[:1] != (str(seq),):
            return f"reply for another frame ({frame.command} {','.join(frame.fields)})"
        if frame.command == "ACK":
            return "ACK"
        return f"NAK {unescape(frame.fields[1]) if len(frame.fields) > 1 else ''}".strip()


class SimulatedSign:
    """A sign controller in software, for tests and the demo: it checks frames, answers, and shows.

    It sits on the master side of a pseudo-terminal pair; the device opens the other side
    (``port``, e.g. ``/dev/pts/3``) exactly as it would open ``/dev/ttyUSB0``. ``silent`` makes it
    ignore everything (a sign with no power); ``displayed`` is what it shows.
    """

    def __init__(self) -> None:
        self._master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self._slave = slave  # kept open so the pair lives until close()
        self.displayed: Optional[tuple[str, str, str]] = None  # level code, zh, en
        self.received = 0
        self.silent = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="simulated-sign", daemon=True)
        self._thread.start()

    def _lines(self) -> Iterator[bytes]:
        pending = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.1)
            if not ready:
                continue
            try:
                pending += os.read(self._master, 4096)
            except OSError:  # the other side closed
                continue
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                yield line + b"\n"

    def _serve(self) -> None:
        for line in self._lines():
            if self.silent:
                continue
            self.received += 1
            os.write(self._master, self._answer(line))

    def _answer(self, line: bytes) -> bytes:
        seq = line[1:].split(b",")[1].split(b"*")[0].decode("ascii", "replace") if b"," in line else "0"
        try:
            frame = decode(line)
            if frame.command == "MSG":
                level, zh, en = frame.fields[1:4]
                self.displayed = (level, unescape(zh), unescape(en))
            elif frame.command == "CLR":
                self.displayed = None
            elif frame.command != "PING":
                raise ProtocolError(f"unknown command {frame.command}")
        except (ProtocolError, ValueError) as exc:
            return encode("NAK", seq, escape(str(exc)))
        return encode("ACK", seq)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self._master)
        os.close(self._slave)


LEVEL_ZH = {"green": "畅通", "yellow": "拥挤", "red": "已满", "unknown": "未知"}


class SignDriver:
    """Shows the diversion notices addressed to this entrance on its sign, newest first.

    Notices arrive on the MQTT thread; a worker thread talks to the (slow) serial line, and only the
    newest notice waiting is shown: a sign must say what is true now, not replay a backlog. A sign that
    is missing, unplugged or off never stops the counting: its state is ``failed`` in the heartbeats,
    and the port is tried again every ``REOPEN_S`` with the newest notice not yet shown.
    """

    REOPEN_S = 10.0

    def __init__(self, config: SignConfig) -> None:
        self.config = config
        self.link: Optional[SignLink] = None
        self._complained = False
        self._open()
        self._latest: Optional[contract.DiversionNotice] = None
        self._unshown: Optional[contract.DiversionNotice] = None  # the newest notice the sign did not take
        self._seen: deque[str] = deque(maxlen=256)  # notice ids already taken (QoS 1 may repeat)
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._show, name="sign", daemon=True)
        self._worker.start()

    @property
    def state(self) -> SignState:
        return self.link.state if self.link is not None else "failed"

    def _open(self) -> bool:
        try:
            self.link = SignLink(self.config.port, self.config.baudrate, self.config.timeout_s, self.config.retries)
        except (serial.SerialException, OSError, ValueError) as exc:
            if not self._complained:  # once, not every REOPEN_S
                log.error("sign %s: cannot open %s (%s); counting goes on, the port is tried again every %g s",
                          self.config.id, self.config.port, exc, self.REOPEN_S)  # fmt: skip
                self._complained = True
            return False
        if self._complained:
            log.info("sign %s: %s is open again", self.config.id, self.config.port)
            self._complained = False
        return True

    def notice(self, payload: bytes) -> None:
        try:
            notice = contract.decode("entrance_notice", payload)
        except contract.ContractError as exc:
            log.warning("ignored a malformed notice for the sign: %s", exc)
            return
        assert isinstance(notice, contract.DiversionNotice)
        with self._ready:
            if notice.id in self._seen:
                return
            self._seen.append(notice.id)
            self._latest = notice
            self._ready.notify()

    def _show(self) -> None:
        while not self._stop.is_set():
            with self._ready:
                self._ready.wait_for(lambda: self._latest is not None or self._stop.is_set(), timeout=self.REOPEN_S)
                notice, self._latest = self._latest, None
            notice = notice or self._unshown  # none newer: the one the sign did not take, again
            if notice is None or self._stop.is_set():
                continue
            try:
                shown = self._put(notice)
            except Exception:  # whatever the port does, the sign's worker must outlive it
                log.exception("sign %s: notice %s not shown; tried again every %g s", self.config.id, notice.id,
                              self.REOPEN_S)  # fmt: skip
                self._drop_link()
                shown = False
            self._unshown = None if shown else notice

    def _put(self, notice: contract.DiversionNotice) -> bool:
        """Show one notice; False when the sign did not take it (missing, unplugged, silent)."""
        if self.link is None and not self._open():
            return False
        assert self.link is not None
        fields = {"text": "", "level": notice.level, "level_zh": LEVEL_ZH[notice.level], "zone": notice.zone}
        zh = self.config.template_zh.format(**{**fields, "text": notice.text.zh})
        en = self.config.template_en.format(**{**fields, "text": notice.text.en})
        try:
            if self.link.show(notice.level, zh, en):
                return True
            # No answer: the port is opened again for the next try, so that a sign plugged back in (a new
            # device node under the same name) is reached, not the dead one.
            self._drop_link()
            return False
        except ProtocolError as exc:
            log.error("notice %s not shown: %s", notice.id, exc)
            return True  # the text itself is wrong: sending it again would not help
        except (serial.SerialException, OSError, termios.error) as exc:  # unplugged while running
            log.error("sign %s: %s failed (%s); tried again every %g s", self.config.id, self.config.port, exc,
                      self.REOPEN_S)  # fmt: skip
            self._drop_link()
            self._complained = True
            return False

    def _drop_link(self) -> None:
        if self.link is not None:
            with contextlib.suppress(Exception):
                self.link.close()
        self.link = None

    def close(self) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify()
        self._worker.join(timeout=5)
        if self.link is not None:
            self.link.close()
