"""``lanewatch agent ...``: the counting device's commands (heavy imports happen inside them)."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, cast

import click

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.counting import Anchor


def _line(value: str) -> tuple[float, float, float, float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected X1,Y1,X2,Y2 in pixels, e.g. 320,0,320,480; got {value!r}") from None
    if (x1, y1) == (x2, y2):
        raise click.BadParameter("the two points are the same; a counting line needs two distinct points")
    return x1, y1, x2, y2


def _peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _interpreter_owns_the_cores() -> None:
    """OpenCV's own thread pool would fight the interpreter's threads for the same cores."""
    import cv2

    cv2.setNumThreads(1)


#: Frames the calibration picture tracks people over: about a second on a Pi's camera.
CALIBRATION_FRAMES = 25
MEASURE_AT_LEAST = 200  # people counted by hand each way: rates give or take 2 %

config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the device's YAML configuration",
)


def _load_config_or_exit(path: Path) -> AgentConfig:
    """The device's configuration, or every problem in it (FILE:LINE: PATH: WHAT) and exit 1."""
    from edge_agent.config import load_agent_config
    from lanewatch.yamlconfig import or_exit

    return or_exit(lambda: load_agent_config(path))


@click.group()
def agent() -> None:
    """The counting device at a lane entrance.

    Camera, detector, tracker and counting lines on the device; only counts leave it.
    """


@agent.command("run")
@config_option
@click.option(
    "--drain-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="seconds to keep sending what is queued after counting stops",
)
def run_command(config_path: Path, drain_timeout: float) -> None:
    """Count people at this entrance and publish the counts over MQTT until stopped (Ctrl-C, SIGTERM).

    Every window (window_s, default 5 s) sends one count message per counting line; every message
    is stored on the device first and removed only when the broker has it. A recording as the
    source ends the run when it ends.
    """
    import logging
    import signal

    from edge_agent.agent import Agent
    from edge_agent.detector import ModelError
    from edge_agent.sources import SourceError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _interpreter_owns_the_cores()
    config = _load_config_or_exit(config_path)
    try:
        agent_ = Agent(config)
    except (ModelError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    signal.signal(signal.SIGINT, lambda *_: agent_.stop())
    signal.signal(signal.SIGTERM, lambda *_: agent_.stop())
    try:
        agent_.run(drain_timeout)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None


@agent.command("selftest")
@config_option
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds to wait for camera and broker")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per check, one per line (for fleet tools)")
def selftest_command(config_path: Path, timeout: float, as_json: bool) -> None:
    """Check this device after installing it: camera, model, storage, broker, clock, sign.

    Each check prints PASS, FAIL or WARN with what it saw and, for a failure, what to do.
    Exit code 0 when nothing failed.
    """
    import dataclasses
    import json

    from edge_agent.selftest import run_checks

    config = _load_config_or_exit(config_path)
    failed = False
    for check in run_checks(config, timeout):
        click.echo(json.dumps(dataclasses.asdict(check), ensure_ascii=False) if as_json else check.line())
        failed = failed or check.outcome == "fail"
    raise SystemExit(1 if failed else 0)


@agent.command("install")
@click.argument("bundle", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--venv",
    type=click.Path(file_okay=False, path_type=Path),
    help="the software the service runs [default: the one running this command]",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="install under this folder instead (an image being prepared); the user must exist there",
)
@click.option("--user", default="lanewatch", show_default=True, help="the service's user (created if missing)")
@click.option("--no-selftest", is_flag=True, help="skip the self-test (an image prepared away from its site)")
def install_command(bundle: Path, venv: Optional[Path], root: Path, user: str, no_selftest: bool) -> None:
    """Install a device BUNDLE (from `lanewatch site device-bundle`) on this device, then self-test it.

    Creates the service user, /etc/lanewatch (configuration, login, model; root-owned, group-readable),
    /var/lib/lanewatch (kept on reinstall) and the systemd unit. The bundle's `install` script runs this
    after installing the software; run it again for a replacement device or a new bundle.
    """
    from edge_agent.install import InstallError, install_bundle, python_prefix, selftest

    software = venv or python_prefix()
    try:
        layout = install_bundle(bundle.resolve(), venv=software, root=root, user=user, say=click.echo)
    except InstallError as exc:
        raise click.ClickException(str(exc)) from None
    if no_selftest:
        click.echo("self-test skipped; run it on site: lanewatch agent selftest --config " + str(layout.config))
        return
    click.echo(f"self-test as {user}:")
    code = selftest(layout, software, user)
    if code != 0:
        click.echo("install: the device is installed but its self-test failed: fix what it says, then run "
                   f"`lanewatch agent selftest --config {layout.config}` again", err=True)  # fmt: skip
        raise SystemExit(code)
    click.echo("next: sudo systemctl enable --now lanewatch-agent   (counting starts, and after every boot)")


@agent.command("calibrate")
@config_option
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file to write")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds to wait for a frame")
def calibrate_command(config_path: Path, out: Path, timeout: float) -> None:
    """Draw the counting lines, their names and the zone 'in' leads into, the ROI, and the people tracked
    over the last second or two (one box and path each), on what the camera sees now.

    For checking where the camera looks before leaving the entrance. The picture is written to
    OUT on this device only; nothing is sent.
    """
    from edge_agent.calibrate import calibration_image, write_png
    from edge_agent.detector import ModelError
    from edge_agent.selftest import some_frames

    config = _load_config_or_exit(config_path)
    check, frames = some_frames(config, timeout, CALIBRATION_FRAMES)
    if not frames:
        raise click.ClickException(f"{check.detail} ({check.hint})")
    try:
        picture, people = calibration_image(config, frames)
    except (ModelError, ValueError) as exc:  # a model missing or not a detector: one line, as `run` says it
        raise click.ClickException(str(exc)) from None
    try:
        write_png(picture, out)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {out}: {len(config.lines)} counting line(s), {people} people tracked over {len(frames)} frames")


@agent.command("eval")
@click.argument("video")
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False), help="TFLite detection model")
@click.option(
    "--line", "line", required=True, help="counting line X1,Y1,X2,Y2 in pixels; 'in' is along (Y2-Y1, -(X2-X1))"
)
@click.option(
    "--anchor",
    type=click.Choice(["foot", "center"]),
    default="foot",
    show_default=True,
    help="the point of each person that must cross: bottom centre or box centre",
)
@click.option(
    "--gt",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="MOT gt.txt: also derive the true crossings of the same line and print accuracy",
)
@click.option(
    "--format",
    "model_format",
    type=click.Choice(["ssd", "yolov8", "yolov5"]),
    default=None,
    help="output decoder [default: recognised from the model's tensors]",
)
@click.option(
    "--hand",
    metavar="IN,OUT",
    default=None,
    help="the people you counted by hand crossing the line in VIDEO, in and out (e.g. 212,198)",
)
@click.option("--threads", type=int, default=2, show_default=True, help="interpreter threads")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def eval_command(
    video: str,
    model: str,
    line: str,
    anchor: str,
    gt: Optional[Path],
    hand: Optional[str],
    model_format: Optional[str],
    threads: int,
    as_json: bool,
) -> None:
    """Count people crossing a line in VIDEO (a video file or a MOT image folder).

    Runs the full pipeline (detector, tracker, counting line) as fast as possible and prints
    {"in", "out", "frames", "seconds", "fps", "gt"}; with --gt or --hand, the true counts, the
    per-direction accuracy (smaller count over larger) and the line's measured rates, as the site
    inventory takes them under the device's line (``measured:``), so that the drift correction starts
    from them. Record a busy quarter of an hour at the entrance with the device's camera and count
    at least 200 people each way by hand. Progress goes to stderr.
    """
    from edge_agent.detector import ModelError
    from edge_agent.evaluation import evaluate
    from edge_agent.sources import SourceError, open_source

    _interpreter_owns_the_cores()
    points = _line(line)
    counted = _hand(hand) if hand is not None else None
    if counted is not None and gt is not None:
        raise click.UsageError("give the true crossings once: --gt (annotations) or --hand (counted by hand)")
    try:
        with open_source(video) as source:
            total = getattr(source, "frame_count", 0) or None
            width, height = source.size
        x1, y1, x2, y2 = points
        if width and height and not all(0 <= x <= width and 0 <= y <= height for x, y in ((x1, y1), (x2, y2))):
            raise click.BadParameter(
                f"the line {x1:g},{y1:g} to {x2:g},{y2:g} is not inside the {width}x{height} picture: nobody "
                "could cross it (pixels, from the top left corner)",
                param_hint="--line",
            )
        bar: Any = click.progressbar(length=total, label="counting", file=sys.stderr)
        with bar:
            result = evaluate(
                video, model, points, cast("Anchor", anchor), gt, threads, model_format, bar.update, hand=counted
            )
    except (ModelError, SourceError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    result["peak_rss_mb"] = _peak_rss_mb()
    _print(result, as_json)
    measured = result.get("measured")
    if measured and not as_json:
        _say_measured(measured)


@agent.command("tally")
@config_option
@click.option("--line", "line_name", default=None, help="the counting line [default: the configuration's first]")
def tally_command(config_path: Path, line_name: Optional[str]) -> None:
    """Measure a line's counting rates against your hand count, while the agent counts as usual.

    Stand where you see the line and press i for every person going in, o for every person going out
    (u takes the last key back), for a busy quarter of an hour or 200 people each way; q stops. The
    agent's own counts over the same time (its totals, committed every window) against yours are the
    line's rates, printed as the site inventory takes them (``measured:`` under the device's line), so
    that the drift correction starts from them. Run it as the service's user, beside the running agent:
    sudo -u lanewatch /opt/lanewatch/venv/bin/lanewatch agent tally --config /etc/lanewatch/device.yaml
    """
    import os
    import termios
    import time
    import tty

    from edge_agent.tally import TotalsError, compare, read_totals

    config = _load_config_or_exit(config_path)
    names = config.line_names
    name = line_name or names[0]
    if name not in names:
        raise click.BadParameter(
            f"no line {name!r} in {config_path}; its lines: {', '.join(names)}", param_hint="--line"
        )
    try:
        start = read_totals(config.state_dir, name)
    except TotalsError as exc:
        raise click.ClickException(str(exc)) from None
    if not sys.stdin.isatty():
        raise click.ClickException("tally reads the keys you press: run it on a terminal (ssh -t, not a pipe)")
    click.echo(f"line {name}: counting by hand from now. i: one in, o: one out, u: take the last back, q: stop")
    hand, keys = {"in": 0, "out": 0}, []
    terminal = sys.stdin.fileno()
    saved = termios.tcgetattr(terminal)
    tty.setcbreak(terminal)  # every key as it is pressed, not echoed; Ctrl-C still stops
    try:
        pressed = "start"
        while pressed and "q" not in pressed:
            pressed = os.read(terminal, 64).decode(errors="replace").lower()  # "" at the end of input
            for key in pressed.split("q")[0]:
                if key in ("i", "o"):
                    keys.append("in" if key == "i" else "out")
                    hand[keys[-1]] += 1
                elif key == "u" and keys:
                    hand[keys.pop()] -= 1
            click.echo(f"\rby hand: in {hand['in']:>4}  out {hand['out']:>4}", nl=False)
    except KeyboardInterrupt:  # stop counting, keep what was counted
        pass
    finally:
        termios.tcsetattr(terminal, termios.TCSADRAIN, saved)
    click.echo()
    click.echo(f"waiting {config.window_s + 1:g} s for the agent's last window ...", err=True)
    time.sleep(config.window_s + 1)  # the people counted by hand just now reach its totals with its next window
    try:
        end = read_totals(config.state_dir, name)
    except TotalsError as exc:
        raise click.ClickException(str(exc)) from None
    counted = (end[0] - start[0], end[1] - start[1])
    if min(counted) < 0:
        raise click.ClickException("the agent's totals went back (was its state reset?): count again")
    if counted == (0, 0) and hand["in"] + hand["out"] > 0:
        raise click.ClickException(
            "the agent counted nobody meanwhile: is it running with this configuration (systemctl status "
            "lanewatch-agent)? Count again once it is"
        )
    click.echo(f"the device counted in {counted[0]}, out {counted[1]}; you counted in {hand['in']}, out {hand['out']}")
    result = compare(counted[0], counted[1], hand)
    if "measured" not in result:
        raise click.ClickException("count people both ways: a rate needs at least one person each way")
    _say_measured(result["measured"])
    click.echo(
        f"(the device's count is off by up to its people of one {config.window_s:g} s window at each end)", err=True
    )


def _say_measured(measured: dict[str, Any]) -> None:
    """What the technician pastes into the site inventory, and how sure it is; or why it is no use."""
    from pydantic import ValidationError

    from lanewatch.site.model import Measured

    people = measured["crossings"]
    try:
        line = Measured(**{**measured, "crossings": max(20, people)})
    except ValidationError:
        click.echo(
            f"the device counted {measured['rate_in']:.0%} going in and {measured['rate_out']:.0%} going out of "
            "the people you counted: too far off for a correction (50 - 150 %); check the line's place and "
            "direction (lanewatch agent calibrate) and your count",
            err=True,
        )
        return
    rates = ", ".join(f"{key}: {value}" for key, value in measured.items())
    click.echo(f"\nfor the site inventory, under this device's line:  measured: {{{rates}}}")
    if people < MEASURE_AT_LEAST:
        doubt = max(line.doubt(line.rate_in), line.doubt(line.rate_out))
        click.echo(
            f"only {people} people counted one way: the rates are give or take {doubt:.0%}; count "
            f"{MEASURE_AT_LEAST} or more each way{'' if people >= 20 else ' (the inventory takes 20 or more)'}",
            err=True,
        )


def _hand(text: str) -> tuple[int, int]:
    """``--hand IN,OUT``: two counts of people, not negative."""
    try:
        came, went = (int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected two whole numbers IN,OUT (e.g. 212,198), got {text!r}", param_hint="--hand"
        ) from None
    if came < 0 or went < 0:
        raise click.BadParameter(f"people counted cannot be negative, got {text!r}", param_hint="--hand")
    return came, went


@agent.command("bench")
@click.argument("video")
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False), help="TFLite detection model")
@click.option("--threads", type=int, default=2, show_default=True, help="interpreter threads")
@click.option("--rounds", type=int, default=20, show_default=True, help="alternating rounds of each")
@click.option("--chunk", type=int, default=60, show_default=True, help="frames in each measured stretch")
@click.option("--frames", "max_frames", type=int, default=300, show_default=True, help="frames of VIDEO to use")
@click.option("--format", "model_format", type=click.Choice(["ssd", "yolov8", "yolov5"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")
def bench_command(
    video: str,
    model: str,
    threads: int,
    rounds: int,
    chunk: int,
    max_frames: int,
    model_format: Optional[str],
    as_json: bool,
) -> None:
    """Bare interpreter rate against the whole pipeline's, on the same frames of VIDEO, in one run.

    The ratio (pipeline / bare) says what everything around inference costs: 0.9 means a tenth.
    The pipeline runs on over the looped recording, as on a device; each round measures CHUNK of
    its frames, then the bare interpreter on the same frames. Also the pipeline without video
    decoding (frames in memory, as a camera delivers them).
    """
    from edge_agent.benchmark import benchmark
    from edge_agent.detector import ModelError
    from edge_agent.sources import SourceError

    _interpreter_owns_the_cores()
    try:
        bar: Any = click.progressbar(length=rounds, label="measuring", file=sys.stderr)
        with bar:
            result = benchmark(model, video, threads, rounds, model_format, bar.update, max_frames, chunk)
    except (ModelError, SourceError) as exc:
        raise click.ClickException(str(exc)) from None
    _print(result, as_json)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key:20} {json.dumps(value)}")


@agent.command("sign-sim")
def sign_sim_command() -> None:
    """A simulated entrance sign on a pseudo-terminal, to try the sign link without hardware.

    Prints the serial port to give the agent (e.g. /dev/pts/3), then every notice it shows, until
    Ctrl-C.
    """
    import time

    from edge_agent.sign import SimulatedSign

    sign = SimulatedSign()
    click.echo(f"simulated sign on {sign.port} (9600 8N1); Ctrl-C stops it", err=True)
    click.echo(sign.port)
    shown: Optional[tuple[str, str, str]] = None
    try:
        while True:
            time.sleep(0.05)
            if sign.displayed != shown:
                shown = sign.displayed
                click.echo("(blank)" if shown is None else f"[{shown[0]}] {shown[1]} | {shown[2]}")
    except KeyboardInterrupt:
        pass
    finally:
        sign.close()
