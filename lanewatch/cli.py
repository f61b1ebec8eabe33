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
def site_broker_config(file: Path, folder: Path, port: int, bind: str, tls_hosts: tuple[str, ...]) -> None:
    """Generate the broker's users, ACLs and TLS certificates for the site FILE into FOLDER.

    One user per device (publishes only under its own topics, reads only its entrance's notices),
    the aggregator, and every person (reads only their grids). Include FOLDER/lanewatch.conf from
    Mosquitto's conf.d. Hand each device its secrets/<id>.password and tls/clients/<id>.*; never
    commit FOLDER. Existing passwords and keys are kept.
    """
    from lanewatch.brokerconfig import generate

    files = generate(_load_or_exit(file), folder, port=port, host=bind, tls_hosts=tls_hosts)
    click.echo(f"wrote {files.config} ({len(files.users)} users; ACL {files.acl}; passwords {files.passwords})")


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
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the local broker and database keep their data [default: a new temporary folder]",
)
def demo(site_file: Path, state_dir: Optional[Path]) -> None:
    """Run the whole site on this machine (Ctrl-C stops it).

    Starts Mosquitto and InfluxDB on free loopback ports and the aggregator for the site, and keeps
    them running until Ctrl-C, then stops everything it started. In this release the devices are
    not part of it yet: point agents (or any MQTT client speaking the contract) at the broker.
    """
    import signal
    import tempfile
    import threading
    import time

    from aggregator.config import AggregatorConfig
    from aggregator.service import Aggregator
    from lanewatch.services import InfluxDB, Mosquitto, ServiceError

    def stop_on(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and a service
    # manager stops with SIGTERM; both must stop what the demo started.
    signal.signal(signal.SIGINT, stop_on)
    signal.signal(signal.SIGTERM, stop_on)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    loaded = _load_or_exit(site_file)
    root = state_dir or Path(tempfile.mkdtemp(prefix="lanewatch-demo-"))
    click.echo(_render(loaded))
    broker, database = Mosquitto(root / "mosquitto"), InfluxDB(root / "influxdb")
    aggregator: Optional[Aggregator] = None
    thread = threading.Thread()
    try:
        broker.start()
        database.start()
        config = AggregatorConfig.model_validate({
            "state_dir": str(root / "aggregator"),
            "broker": {"host": broker.host, "port": broker.port},
            "influxdb": {"url": database.url, "database": loaded.site.id},
        })  # fmt: skip
        aggregator = Aggregator(loaded, config)
        thread = threading.Thread(target=aggregator.run, name="aggregator")
        thread.start()
        click.echo(f"\nMQTT broker   {broker.url}   (topics: lanewatch contract topics --site {loaded.site.id})")
        click.echo(f"InfluxDB      {database.url}   database {loaded.site.id}")
        click.echo(f"Aggregator    {config.instance}   (status: lanewatch/v1/{loaded.site.id}/aggregator/+/status)")
        click.echo(f"State folder  {root}")
        click.echo("Running. Press Ctrl-C to stop.")
        while True:
            time.sleep(1)
            for server in (broker, database):
                if server.process is not None and server.process.poll() is not None:
                    raise ServiceError(f"{server.name} stopped unexpectedly; its log ends with:\n{server.log_tail()}")
            if not thread.is_alive():
                raise ServiceError(aggregator.failed or "the aggregator stopped unexpectedly")
    except ServiceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("\nStopping.")
    finally:
        if aggregator is not None:
            aggregator.stop()
        if thread.is_alive():
            thread.join()
        database.stop()
        broker.stop()


if __name__ == "__main__":
    main()
