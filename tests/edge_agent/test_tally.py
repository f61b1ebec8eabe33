"""`lanewatch agent tally`: the technician's hand count against the running agent's own counts, on a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from edge_agent.outbox import Outbox

LANEWATCH = str(Path(sys.executable).with_name("lanewatch"))


def config(tmp_path: Path) -> Path:
    settings = {
        "site": "sanfang-qixiang", "device": "cam-wenru-west", "entrance": "wenru-west", "source": "camera:0",
        "model": str(tmp_path / "model.tflite"), "lines": [{"name": "gate", "start": [0.5, 0.0], "end": [0.5, 1.0]}],
        "window_s": 0.2, "state_dir": str(tmp_path / "state"),
    }  # fmt: skip
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def commit(outbox: Outbox, came: int, went: int) -> None:
    """What the agent does with every window: the line's totals, committed with the window's messages."""
    outbox.append([], state={"total.gate.in": str(came), "total.gate.out": str(went)})


def tally(path: Path, outbox: Outbox, keys: str, came: int, went: int) -> tuple[int, str, str]:
    """``agent tally`` on a terminal: ``keys`` pressed, meanwhile the agent counts ``came`` and ``went``."""
    main, terminal = os.openpty()
    command = [LANEWATCH, "agent", "tally", "--config", str(path)]
    process = subprocess.Popen(command, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        time.sleep(2)  # let it read the totals it starts from
        for i in range(0, len(keys), 50):
            os.write(main, keys[i : i + 50].encode())
            time.sleep(0.1)
        before = {k: int(v) for k, v in outbox.state().items() if k.startswith("total.")}
        commit(outbox, before["total.gate.in"] + came, before["total.gate.out"] + went)
        os.write(main, b"q")
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        os.close(main)
        os.close(terminal)
    return process.returncode, out, err


def test_the_hand_count_against_the_agents_totals_gives_the_lines_rates_for_the_inventory(tmp_path: Path) -> None:
    path = config(tmp_path)
    outbox = Outbox(tmp_path / "state" / "outbox.db")
    commit(outbox, 5_000, 4_000)  # what the agent counted before the technician came
    keys = "i" * 200 + "o" * 50 + "x" + "i" + "u" + "o" * 50  # a key that means nothing, and one taken back
    code, out, err = tally(path, outbox, keys, 186, 97)  # the device saw 93 % of those going in, 97 % going out
    assert code == 0, err
    assert "the device counted in 186, out 97; you counted in 200, out 100" in out
    assert "measured: {rate_in: 0.93, rate_out: 0.97, crossings: 100}" in out
    assert "count 200 or more each way" in err  # 100 going out: the rates are less sure than they could be
    stopped, out, err = tally(path, outbox, "io" * 30, 0, 0)  # the agent is not counting
    outbox.close()
    assert stopped == 1
    assert "the agent counted nobody meanwhile: is it running" in err
    assert "measured:" not in out


def test_tally_without_a_running_agent_or_with_an_unknown_line_says_what_to_do(tmp_path: Path) -> None:
    path = config(tmp_path)
    missing = subprocess.run([LANEWATCH, "agent", "tally", "--config", str(path)], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60, check=False)  # fmt: skip
    assert missing.returncode == 1
    assert "is the agent running here" in missing.stderr
    Outbox(tmp_path / "state" / "outbox.db").close()  # the agent started but has not counted yet
    command = [LANEWATCH, "agent", "tally", "--config", str(path), "--line", "mouth"]
    unknown = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)
    assert unknown.returncode == 2
    assert "no line 'mouth'" in unknown.stderr
    assert "its lines: gate" in unknown.stderr
    idle = subprocess.run([LANEWATCH, "agent", "tally", "--config", str(path)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)  # fmt: skip
    assert idle.returncode == 1
    assert "has not counted on line 'gate' yet" in idle.stderr
    commit(Outbox(tmp_path / "state" / "outbox.db"), 10, 10)
    piped = subprocess.run([LANEWATCH, "agent", "tally", "--config", str(path)], capture_output=True, text=True,
                           input="iiioooq", timeout=60, check=False)  # fmt: skip
    assert piped.returncode == 1
    assert "run it on a terminal" in piped.stderr
