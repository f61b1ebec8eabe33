"""The agent at a lane entrance: frames in, one count message per counting line per window out.

Each window's messages and the line totals after it are committed to the outbox in one
transaction, so the cumulative totals survive restarts and reboots and always agree with what was
sent. A window in which no frame was processed is not sent at all: a dead camera must look like
missing data (the heartbeat says why), never like an empty lane.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Literal, Optional

from edge_agent import systemd
from edge_agent.config import AgentConfig
from edge_agent.counting import CountingLine, RegionOfInterest
from edge_agent.detector import Detector
from edge_agent.outbox import Outbox
from edge_agent.pipeline import Pipeline
from edge_agent.publisher import Publisher
from edge_agent.serial_counter import SerialCounter
from edge_agent.sign import SignDriver
from edge_agent.sources import FrameSource, LiveSource, open_source
from lanewatch import __version__, contract

log = logging.getLogger(__name__)

SERIAL = "serial:"  # source: serial:/dev/ttyUSB0 is a people counter on that port


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.boot_id = uuid.uuid4().hex
        self.started = time.monotonic()
        self.outbox = Outbox(config.state_dir / "outbox.db", config.outbox.max_messages,
                             config.outbox.max_age_h * 3600, config.outbox.max_unstored)  # fmt: skip
        state = self.outbox.state()
        names = config.line_names
        self.totals = {name: {d: int(state.get(f"total.{name}.{d}", "0")) for d in ("in", "out")} for name in names}
        self._commit_lock = threading.Lock()  # the camera and a cross-check counter commit from two threads
        self.seq = 0
        self.publisher = Publisher(self.outbox, config.broker, config.site, config.device, self.boot_id)
        self.detector = (
            Detector(str(config.model), num_threads=config.threads, model_format=config.model_format)
            if config.model is not None
            else None
        )
        self.sign = SignDriver(config.sign) if config.sign else None
        if self.sign is not None:
            topic = contract.KINDS["entrance_notice"].template.format(site=config.site, entrance=config.entrance)
            self.publisher.subscribe(topic, self.sign.notice)
        self.source: Optional[FrameSource] = None
        self.pipeline: Optional[Pipeline] = None
        self.counter: Optional[SerialCounter] = None
        self.frames_seen = 0
        self.last_progress = time.monotonic()
        self.wall_origin = datetime.now(timezone.utc)  # window 0 starts here (device time, UTC), set by run()
        self.clock_start = time.monotonic()
        self._stop = threading.Event()
        self._beat_lock = threading.Lock()
        self._last_beat = (0, 0.0, time.monotonic())  # frames, invoke seconds, monotonic time at the last beat
        self.publisher.on_connected = lambda: self._beat(connecting=True)

    def stop(self) -> None:
        self._stop.set()
        if self.source is not None:
            self.source.interrupt()

    def run(self, drain_timeout: float = 30.0) -> None:
        """Count until stopped (or until a file source ends), then hand what is left to the broker."""
        if not self.config.source.startswith(SERIAL):
            # Opened before the first heartbeat, which would otherwise report a camera not yet opened.
            self.source = open_source(self.config.source, realtime=self.config.realtime, loop=self.config.loop)
        self.publisher.start()
        for target in (self._heartbeats, self._watchdog):
            threading.Thread(target=target, name=target.__name__.strip("_"), daemon=True).start()
        self.wall_origin, self.clock_start = datetime.now(timezone.utc), time.monotonic()
        helper: Optional[threading.Thread] = None
        try:
            if self.config.source.startswith(SERIAL):
                self._count_serial(self.config.source[len(SERIAL) :], self.config.lines[0].name, primary=True)
            else:
                if self.config.counter is not None:
                    check = self.config.counter
                    beside = (check.port, check.line, False, check.baudrate)
                    helper = threading.Thread(target=self._count_serial, args=beside, name="counter", daemon=True)
                    helper.start()
                assert self.source is not None
                with self.source as source:
                    self._count(source)
        finally:
            self._stop.set()
            if helper is not None:
                helper.join(timeout=5)  # its last window is committed before the outbox closes
            deadline = time.monotonic() + drain_timeout
            while self.outbox.depth() and self.publisher.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            self.publisher.stop()
            self.outbox.close()
            if self.sign is not None:
                self.sign.close()

    # --- counting -----------------------------------------------------------------------------------------

    def _count(self, source: FrameSource) -> None:
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            if self._stop.is_set():
                log.info("stopped before the source %s gave a frame", self.config.source)
            else:
                log.error("the source %s gave no frame", self.config.source)
            return
        height, width = first.image.shape[:2]
        lines = [
            CountingLine(spec.name, (spec.start[0] * width, spec.start[1] * height),
                         (spec.end[0] * width, spec.end[1] * height), anchor=self.config.anchor)
            for spec in self.config.lines
        ]  # fmt: skip
        roi = RegionOfInterest([(x * width, y * height) for x, y in self.config.roi]) if self.config.roi else None
        assert self.detector is not None  # the configuration requires a model for a camera
        self.pipeline = Pipeline(self.detector, lines, roi=roi, anchor=self.config.anchor)
        systemd.notify(f"READY=1\nSTATUS=counting {len(lines)} line(s) at {width}x{height}")
        live = isinstance(source, LiveSource)
        fps = source.fps or 25.0
        # Window clock: capture time for cameras; media time for recordings, so a replay as fast as
        # possible still makes windows of the recording's seconds, stamped as if it were live.
        windows = _Windows([line.name for line in lines], self.config.window_s, self._commit)
        for index, counts in self.pipeline.run(itertools.chain([first], frames)):
            clock = time.monotonic() - self.clock_start if live else index / fps
            windows.observe(clock, [(c.line, c.direction) for c in counts.crossings], counts.in_view)
            self.frames_seen += 1
            self.last_progress = time.monotonic()
            if self._stop.is_set():
                break
        windows.flush()  # the last, partial window: counted people are never thrown away

    def _count_serial(self, port: str, line: str, primary: bool = False, baudrate: int = 9600) -> None:
        """A UART people counter: the device's counting source (``primary``), or a cross-check beside
        the camera published under a line of its own."""
        counter = SerialCounter(port, baudrate)
        windows = _Windows([line], self.config.window_s, self._commit)
        if primary:
            self.counter = counter
            systemd.notify(f"READY=1\nSTATUS=counting line {line} from the counter on {port}")
        try:
            for report in counter.reports():
                if self._stop.is_set():
                    break
                if report is None:
                    continue
                crossings = [(line, "in")] * report.entered + [(line, "out")] * report.left
                windows.observe(report.time - self.clock_start, crossings, 0)
                self.last_progress = time.monotonic()
        finally:
            windows.flush()
            counter.close()

    def _commit(self, index: int, window: dict[str, dict[str, int]], in_view: int) -> None:
        with self._commit_lock:
            self._commit_locked(index, window, in_view)

    def _commit_locked(self, index: int, window: dict[str, dict[str, int]], in_view: int) -> None:
        start = self.wall_origin + timedelta(seconds=index * self.config.window_s)
        end = start + timedelta(seconds=self.config.window_s)
        messages, state = [], {}
        for name, counts in window.items():
            totals = self.totals[name]
            totals["in"] += counts["in"]
            totals["out"] += counts["out"]
            message = contract.CountWindow(
                site=self.config.site, device=self.config.device, line=name, boot_id=self.boot_id, seq=self.seq,
                window_start=start, window_end=end, in_=counts["in"], out=counts["out"], total_in=totals["in"],
                total_out=totals["out"], in_view=in_view, model=self._model_name(), agent_version=__version__,
            )  # fmt: skip
            self.seq += 1
            messages.append((contract.topic_for(message), contract.encode(message)))
            state[f"total.{name}.in"], state[f"total.{name}.out"] = str(totals["in"]), str(totals["out"])
        self.outbox.append(messages, state)
        self.publisher.notify()

    # --- health -------------------------------------------------------------------------------------------

    def _model_name(self) -> str:
        return self.detector.name[:64] if self.detector is not None else "serial-counter"

    def _source_state(self) -> Literal["ok", "reconnecting", "failed", "none"]:
        """The counting source's state for the heartbeat: the camera's, or the serial counter's."""
        source = self.counter or self.source
        return source.state if source is not None else "reconnecting"

    def _watchdog(self) -> None:
        """Tell systemd we are alive while frames are being counted, or while the camera is known to be
        reconnecting; a pipeline stuck with a working camera stops the pings and gets restarted."""
        period = systemd.watchdog_period()
        if period is None:
            return
        while not self._stop.wait(period):
            camera_down = self._source_state() != "ok"
            if camera_down or time.monotonic() - self.last_progress < 2 * period:
                systemd.notify("WATCHDOG=1")

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.config.heartbeat_s):
            self._beat()

    def _beat(self, connecting: bool = False) -> None:
        """One heartbeat, published at once: every heartbeat_s, and first thing at every connection (the
        aggregator measures this device's clock by it). Health is live state: never queued while offline."""
        with self._beat_lock:
            now = time.monotonic()
            frames, invoke = self.frames_seen, self.pipeline.times.invoke if self.pipeline else 0.0
            last_frames, last_invoke, last_time = self._last_beat
            elapsed, done = max(now - last_time, 1e-6), frames - last_frames
            beat = contract.Heartbeat(
                site=self.config.site, device=self.config.device, boot_id=self.boot_id,
                time=datetime.now(timezone.utc), uptime_s=now - self.started, fps=min(done / elapsed, 1000.0),
                inference_ms=(1000 * (invoke - last_invoke) / done) if done else None,
                dropped_frames=self.source.dropped if self.source else 0, cpu_temp_c=_cpu_temperature(),
                load1=os.getloadavg()[0], outbox_depth=self.outbox.depth(), outbox_dropped=self.outbox.dropped(),
                camera=self._source_state(), storage="full" if self.outbox.full else "ok",
                sign=self.sign.state if self.sign else "none",
                clock_synced=_clock_synced(),
            )  # fmt: skip
            self._last_beat = (frames, invoke, now)
        if connecting or self.publisher.connected:
            self.publisher.publish_live(contract.topic_for(beat), contract.encode(beat))


def _cpu_temperature() -> Optional[float]:
    """The SoC temperature on a Pi or Jetson (thermal zone 0), None where there is none."""
    try:
        return int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000
    except (OSError, ValueError):
        return None


def _clock_synced() -> Optional[bool]:
    """systemd-timesyncd's flag file, when the system uses it; None when unknown."""
    if Path("/run/systemd/timesync").is_dir():
        return Path("/run/systemd/timesync/synchronized").exists()
    return None


class _Windows:
    """Crossings gathered into fixed windows of a clock (seconds from the start); a window in which
    nothing was observed is not committed at all."""

    def __init__(self, lines: list[str], window_s: float, commit: Callable[[int, dict, int], None]) -> None:
        self.lines, self.window_s, self.commit = lines, window_s, commit
        self.index, self.observed, self.in_view = 0, False, 0
        self.counts = self._empty()

    def _empty(self) -> dict[str, dict[str, int]]:
        return {name: {"in": 0, "out": 0} for name in self.lines}

    def observe(self, clock: float, crossings: list[tuple[str, str]], in_view: int) -> None:
        while clock >= (self.index + 1) * self.window_s:  # close every window this observation has passed
            self.flush()
            self.index += 1
        for line, direction in crossings:
            self.counts[line][direction] += 1
        self.observed, self.in_view = True, in_view

    def flush(self) -> None:
        if self.observed:
            self.commit(self.index, self.counts, self.in_view)
        self.counts, self.observed = self._empty(), False
