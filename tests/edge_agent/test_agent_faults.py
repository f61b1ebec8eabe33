"""The agent when things break for real: the broker gone for minutes, the network cut without a word,
the disk under the outbox full."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge_agent.outbox import Outbox
from harness.servers import Mosquitto
from tests.cameras import MjpegCamera
from tests.conftest import Listener, fill, wait_until
from tests.edge_agent.test_agent import LANEWATCH, start_agent, write_config

OUTAGE_S = 180  # "several minutes"
CUT_S = 30  # a link cut without a word: several keepalive intervals (5 s) long


class FreezableProxy:
    """A TCP relay the test controls: ``freeze()`` stops every byte but keeps the connections open,
    as a cut cable or a dead router does (no FIN, no RST)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    cam = MjpegCamera(fps=10).start()
    yield cam
    cam.stop()


@pytest.mark.slow
def test_broker_gone_for_minutes_every_window_arrives_once(
    fresh_mosquitto: Mosquitto, listener: Listener, camera: MjpegCamera, shared_assets: Path, tmp_path: Path
) -> None:
    """One window a second keeps being counted while the broker is down; after it returns every
    window arrives, once by (device, boot, seq), the backlog in order."""
    agent = start_agent(write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True, source=camera.url))
    try:
        assert wait_until(lambda: len(listener.windows()) >= 5, seconds=60)
        fresh_mosquitto.stop()
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < OUTAGE_S:
            assert agent.poll() is None, "the agent must keep running while the broker is away"
            time.sleep(1)
        fresh_mosquitto.start()
        made_offline = OUTAGE_S - 5  # windows the agent closed while the broker was gone, at least
        assert wait_until(lambda: len(listener.windows()) >= 5 + made_offline, seconds=180)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=90)
    assert wait_until(lambda: listener.windows() and _complete(listener.windows()), seconds=60)
    windows = listener.windows()
    assert len({w["boot_id"] for w in windows}) == 1
    seqs = [w["seq"] for w in windows]
    assert sorted(seqs) == list(range(len(seqs)))  # none lost, none twice
    assert len(seqs) >= 5 + OUTAGE_S - 5
    # arrival order: the backlog (sent oldest first) interleaved with live windows, each in order
    runs: list[int] = []
    for seq in seqs:
        pile = next((i for i, top in enumerate(runs) if top < seq), None)
        runs.append(seq) if pile is None else runs.__setitem__(pile, seq)
    assert len(runs) <= 3  # before the outage, its backlog, and live windows after it


def test_a_link_cut_and_restored_loses_and_doubles_nothing(
    fresh_mosquitto: Mosquitto, listener: Listener, camera: MjpegCamera, shared_assets: Path, tmp_path: Path
) -> None:
    """The network between the device and the broker stops passing bytes (no FIN, no RST) for half a
    minute, then comes back: the agent notices the dead link by its keepalive, keeps counting into
    its outbox, reconnects when it can, and every window arrives; the totals add up exactly."""
    proxy = FreezableProxy(fresh_mosquitto.port)
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True, source=camera.url)
    config.write_text(config.read_text().replace(f"port: {fresh_mosquitto.port}", f"port: {proxy.port}"))
    agent = start_agent(config)
    try:
        assert wait_until(lambda: len(listener.windows()) >= 5, seconds=60)
        proxy.freeze()
        time.sleep(CUT_S)
        assert agent.poll() is None, "the agent must keep running while the link is dead"
        proxy.thaw()
        assert wait_until(lambda: len(listener.windows()) >= 5 + CUT_S - 5, seconds=120)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=90)
        proxy.close()
    assert wait_until(lambda: listener.windows() and _complete(listener.windows()), seconds=60)
    windows = listener.windows()
    assert len({w["boot_id"] for w in windows}) == 1
    assert sorted(w["seq"] for w in windows) == list(range(len(windows)))  # none lost, none twice
    for line in {w["line"] for w in windows}:  # the cumulative totals agree with the windows, exactly
        mine = sorted((w for w in windows if w["line"] == line), key=lambda w: w["seq"])
        assert mine[-1]["total_in"] == sum(w["in"] for w in mine) + mine[0]["total_in"] - mine[0]["in"]
        assert mine[-1]["total_out"] == sum(w["out"] for w in mine) + mine[0]["total_out"] - mine[0]["out"]


def _complete(windows: list[dict]) -> bool:
    seqs = sorted(w["seq"] for w in windows)
    return seqs == list(range(len(seqs)))


def test_the_last_will_marks_a_silent_device_offline(
    fresh_mosquitto: Mosquitto, listener: Listener, camera: MjpegCamera, shared_assets: Path, tmp_path: Path
) -> None:
    """The network to the device is cut without a word: the broker notices the keepalive lapse and
    publishes the device's Last Will. Mosquitto 2.0 allows 1.5 keepalive intervals and checks its
    clients every few seconds (up to ~5 s late), so the bound here is 1.5 x 5 s + 5 s, with 2 s for
    the Will's delivery to the listener."""
    proxy = FreezableProxy(fresh_mosquitto.port)
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True, source=camera.url)
    config.write_text(config.read_text().replace(f"port: {fresh_mosquitto.port}", f"port: {proxy.port}"))
    agent = start_agent(config)
    try:
        assert wait_until(lambda: listener.availability[-1:] == ["online"], seconds=60)
        proxy.freeze()
        cut = time.monotonic()
        assert wait_until(lambda: listener.availability[-1:] == ["offline"], seconds=1.5 * 5 + 5 + 2), (
            listener.availability,
            fresh_mosquitto.log_tail(15),
        )
        print(f"offline {time.monotonic() - cut:.1f} s after the cut (keepalive 5 s)")
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        proxy.close()


@pytest.mark.slow
def test_a_full_disk_under_the_outbox_loses_a_bounded_counted_reported_number_of_windows(
    fresh_mosquitto: Mosquitto, listener: Listener, shared_assets: Path, small_disk: Path, tmp_path: Path
) -> None:
    """The device's disk fills up while the broker is away: the agent keeps counting, holds what the disk
    cannot take in memory (at most ``max_unstored`` messages, the oldest dropped beyond), says so in its
    heartbeat (storage full, the drops counted), sends what it kept when the broker is back, and stores
    again once space is freed. A dropped window loses its own breakdown, not its people: the cumulative
    totals of the next window carry them."""
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True)
    text = config.read_text().replace(str(tmp_path / "state"), str(small_disk / "state"))
    config.write_text(text + "loop: true\noutbox: {max_unstored: 10}\n")
    agent = start_agent(config)
    filler: Path | None = None
    try:
        assert wait_until(lambda: len(listener.windows()) >= 5, seconds=60)
        # How far the agent's clock (the recording's time, paced to real time) is behind the wall clock:
        # a lagging agent catches up while the broker is away and makes more windows than seconds pass.
        newest = max(datetime.fromisoformat(w["window_end"]) for w in listener.windows())
        lag = max(0.0, (datetime.now(timezone.utc) - newest).total_seconds())
        filler = fill(small_disk)
        away = time.monotonic()
        fresh_mosquitto.stop()
        time.sleep(40)  # 40 one-second windows while the disk is full and the broker away
        assert agent.poll() is None, "the agent must keep counting on a full disk"
        fresh_mosquitto.start()
        restarted = datetime.now(timezone.utc)
        # The agent is back when a heartbeat it sent after the restart arrives (the broker also delivers
        # heartbeats queued for the listener before the stop; the agent reconnects with backoff).
        assert wait_until(lambda: any(datetime.fromisoformat(h["time"]) > restarted for h in listener.heartbeats),
                          seconds=90)  # fmt: skip
        away = time.monotonic() - away
        assert wait_until(lambda: any(h["storage"] == "full" and h["outbox_dropped"] > 0 for h in listener.heartbeats),
                          seconds=60), listener.heartbeats[-1:]  # fmt: skip
        filler.unlink()
        filler = None
        assert wait_until(lambda: listener.heartbeats[-1]["storage"] == "ok", seconds=30)
        made = max(w["seq"] for w in listener.windows())
        assert wait_until(lambda: max(w["seq"] for w in listener.windows()) >= made + 3, seconds=30)
    finally:
        if filler is not None:
            filler.unlink()
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=90)
    reported = listener.heartbeats[-1]["outbox_dropped"]
    windows = sorted(listener.windows(), key=lambda w: w["seq"])
    missing = set(range(windows[-1]["seq"] + 1)) - {w["seq"] for w in windows}
    assert 0 < len(missing) == reported  # counted and reported, exactly
    print(f"agent away {away:.1f} s, {lag:.1f} s behind before, {len(missing)} windows dropped")
    assert len(missing) <= away + lag + 1 - 10  # bounded: what the outage made, less what memory holds
    assert max(missing) - min(missing) + 1 == len(missing)  # the oldest of them, in one run
    assert len({w["seq"] for w in windows}) == len(windows)  # none doubled
    totals = [(w["total_in"], w["total_out"]) for w in windows]
    assert totals == sorted(totals)  # the cumulative totals never step back
    # the people in the dropped windows are in the totals: the device's own record agrees with the last window
    state = Outbox(small_disk / "state" / "outbox.db").state()
    assert (int(state["total.gate.in"]), int(state["total.gate.out"])) == totals[-1]
    assert totals[-1][0] >= 4  # people walked through during the test (TUD-Stadtmitte: one each way a pass)


def test_an_agent_whose_camera_never_opens_stops_on_sigterm(
    fresh_mosquitto: Mosquitto, listener: Listener, shared_assets: Path, tmp_path: Path
) -> None:
    """A camera that is not there at boot (no /dev/video7): the agent keeps trying it and says so in its
    heartbeats, never exits on its own (no crash loop), and `systemctl stop` (SIGTERM) still stops it,
    cleanly."""
    config = write_config(tmp_path, fresh_mosquitto, shared_assets, realtime=True, source="camera:7")
    agent = subprocess.Popen([LANEWATCH, "agent", "run", "--config", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: any(h["camera"] != "ok" for h in listener.heartbeats), seconds=30)
        assert all(h["camera"] != "ok" for h in listener.heartbeats)
        assert agent.poll() is None, "it keeps trying a missing camera"
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err[-2000:]
    assert "cannot open camera:7" in err
    assert "Traceback" not in err
