"""``lanewatch alerts``, ``dashboards`` and ``report``: the control room's and the receivers' commands."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from lanewatch.cliopts import site_option

if TYPE_CHECKING:
    from control_room.forwarder import ForwarderConfig
    from lanewatch.mqttconfig import BrokerConfig
    from lanewatch.site.model import Site


# --- alerts: the receivers' side ------------------------------------------------------------------


@click.group()
def alerts() -> None:
    """Crowd levels and diversion notices, live, and on phones.

    What grid staff and the control room see when a zone fills: every zone's current level, and the
    notices as they are sent. Both read the broker only (retained levels, QoS 1 notices). `forward`
    delivers the notices to phones (WeChat Work, DingTalk, SMS, webhooks); `deliveries` shows what it sent.
    """


def config_option(command: Any) -> Any:
    """``--login FILE`` (or ``--config FILE``): a YAML with a ``broker:`` section, relative paths in it
    taken from the file's folder (a person's logins/<id>/login.yaml from ``site broker-config``)."""
    return click.option(
        "--login", "--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="your login file (logins/<you>/login.yaml from `lanewatch site broker-config`), or any YAML with "
        "a broker: section [default: a local broker on 1883, no login]",
    )(command)  # fmt: skip


def _receiver(site_file: Path, config_path: Optional[Path]) -> tuple[Site, BrokerConfig]:
    from control_room.alerts import ReceiverConfig
    from lanewatch.mqttconfig import BrokerConfig
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import load_model, or_exit

    site = or_exit(lambda: load_site(site_file))
    if config_path is None:
        return site, BrokerConfig()
    broker = or_exit(lambda: load_model(config_path, ReceiverConfig)).broker
    return site, broker.beside(config_path.parent)


@alerts.command("state")
@site_option
@config_option
@click.option("--wait", "wait_s", type=float, default=3.0, show_default=True, help="seconds to wait for the levels")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per zone, in the inventory's order")
def alerts_state(site_file: Path, config_path: Optional[Path], wait_s: float, as_json: bool) -> None:
    """Print every zone's level (and since when), its occupancy now with its uncertainty, and its coverage,
    from the state the aggregator keeps on the broker (current to a few seconds); then whether notices
    reach phones (the forwarder's own status), when the site's people have phone channels."""
    import json

    from control_room.alerts import phone_line, snapshot, state_json, state_lines

    site, broker = _receiver(site_file, config_path)
    found, forwarders = snapshot(site, broker, wait_s)
    if as_json:
        click.echo(json.dumps(state_json(site, found), ensure_ascii=False, indent=1))
        return
    for line in state_lines(site, found):
        click.echo(line)
    phones = phone_line(site, forwarders)
    if phones is not None:
        click.echo(phones)


@alerts.command("headcount")
@site_option
@config_option
@click.argument("zone")
@click.argument("count", type=click.IntRange(0, 1_000_000))
@click.option("--person", help="who counted, by inventory id [default: the broker login of --config]")
@click.option("--note", default="", help="a word on how it was counted (kept with the correction)")
def alerts_headcount(
    site_file: Path, config_path: Optional[Path], zone: str, count: int, person: Optional[str], note: str
) -> None:
    """Report COUNT people counted in ZONE (a third-level grid of yours): it re-anchors the zone's occupancy.

    The aggregator weighs the count against its estimate by how sure each is, moves the zone (and every zone
    holding it) and records the correction with your name; the zone's uncertainty band shrinks.
    """
    from control_room.alerts import send_headcount

    site, broker = _receiver(site_file, config_path)
    click.echo(send_headcount(site, broker, zone, count, person, note))


@alerts.command("watch")
@site_option
@config_option
@click.option("--zone", help="only this zone and the zones inside it (e.g. a grid officer's grid)")
@click.option("--count", type=click.IntRange(1), help="stop after this many notices [default: run until Ctrl-C]")
def alerts_watch(site_file: Path, config_path: Optional[Path], zone: Optional[str], count: Optional[int]) -> None:
    """Show diversion notices as they arrive, coloured by level, with their actions and text.

    Notices go to stdout. The connection's state goes to stderr: when the broker is lost nothing can
    arrive, and the watcher says so at once (with a bell) and every 30 s until it is back; then it shows
    every zone's level as the broker kept it. Notices sent during a short loss arrive on return.
    """
    from control_room.alerts import watch

    site, broker = _receiver(site_file, config_path)
    if zone is not None and zone not in site.zones_by_id:
        raise click.BadParameter(f"no zone {zone!r}; zones: {', '.join(site.zones_by_id)}", param_hint="--zone")
    click.echo(
        f"watching notices for {zone or 'every zone'} of {site.site.id} on {broker.host}:{broker.port}", err=True
    )
    try:
        for line in watch(site, broker, zone, count):
            click.echo(line.text, err=line.status)
    except KeyboardInterrupt:
        pass


forwarder_config = click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="the forwarder's YAML: broker login, state_dir, channels (see firmware_config/forwarder.yaml)",
)  # fmt: skip


def _forwarder_config(config_path: Path) -> ForwarderConfig:
    from control_room.forwarder import ForwarderConfig
    from lanewatch.yamlconfig import load_model, or_exit

    config = or_exit(lambda: load_model(config_path, ForwarderConfig))
    folder = config_path.parent
    channels = {
        name: channel.model_copy(update={
            field: folder / value for field in ("key_file", "secret_file")
            if (value := getattr(channel, field)) is not None and not Path(value).is_absolute()
        })
        for name, channel in config.channels.items()
    }  # fmt: skip
    return config.model_copy(update={"broker": config.broker.beside(folder), "channels": channels})


@alerts.command("forward")
@site_option
@forwarder_config
def alerts_forward(site_file: Path, config_path: Path) -> None:
    """Deliver every diversion notice to the phones of the people it is for, until stopped.

    Each person's channels come from the inventory (`notify:` under people): WeChat Work and DingTalk
    group robots, SMS through a gateway, any webhook. Notices wait in the broker while the forwarder is
    down and in its store until delivered; nothing is sent twice; failed sends are retried with backoff;
    a person not reached within `unreachable_after_s` is reported to the control room (retained on
    people/<person>/reach) and in the log. Relative paths in the file are taken from its folder.
    """
    import logging
    import signal

    from control_room.forwarder import Forwarder, check_channels
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    site = or_exit(lambda: load_site(site_file))
    config = _forwarder_config(config_path)
    problems = check_channels(site, config)
    if problems:
        for line in problems:
            click.echo(f"{config_path}: {line}", err=True)
        raise SystemExit(1)
    service = Forwarder(site, config)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    reached = sum(1 for p in site.people if p.notify)
    click.echo(f"forwarding notices to {reached} people on {len(config.channels)} channel(s); "
               f"records in {config.state_dir / 'forwarder.db'}", err=True)  # fmt: skip
    service.run()


@alerts.command("deliveries")
@forwarder_config
@click.option("--person", help="only the deliveries to this person")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per delivery, newest first")
def alerts_deliveries(config_path: Path, person: Optional[str], as_json: bool) -> None:
    """What the forwarder sent, to whom, when, and what is still failing (from its records)."""
    import json

    from control_room.forwarder import DeliveryStore

    config = _forwarder_config(config_path)
    path = config.state_dir / "forwarder.db"
    if not path.exists():
        raise click.ClickException(f"no delivery records in {config.state_dir}: has `lanewatch alerts forward` run?")
    store = DeliveryStore(path)
    rows = [row for row in store.rows() if person is None or person in row["people"]]
    store.close()
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
            continue
        when = datetime.fromtimestamp(row["created"]).strftime("%m-%d %H:%M:%S")
        to = ", ".join(row["people"]) + (f" ({row['address']})" if row["address"] else "")
        error = f"  last error: {row['error']}" if row["error"] and row["state"] != "delivered" else ""
        click.echo(f"{when} {row['notice'][:8]} {row['channel']:12} {row['state']:9} x{row['attempts']} {to}{error}")


@click.group()
def dashboards() -> None:
    """The control room's Grafana boards, generated from the site inventory.

    Overview, Zone (one zone at a time), Devices and Trends, InfluxQL on the aggregator's InfluxDB.
    Install them either way: mount the files `build` writes (Grafana file provisioning), or `push`
    them to a running Grafana through its HTTP API.
    """


@dashboards.command("build")
@site_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="the aggregator's configuration: the boards read the InfluxDB it writes "
              "[default: the example aggregator's, firmware_config/aggregator.yaml]")  # fmt: skip
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
def dashboards_build(site_file: Path, config_path: Optional[Path], outdir: Path) -> None:
    """Write the dashboards' JSON into OUTDIR and Grafana's provisioning files into OUTDIR/provisioning.

    The datasource points at the InfluxDB (URL and database) the aggregator configuration writes to, so
    the boards show what it stores; give the configuration your aggregator runs with."""
    from aggregator.config import load_aggregator_config
    from control_room.dashboards import write, write_provisioning
    from lanewatch import EXAMPLE_AGGREGATOR
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    site = or_exit(lambda: load_site(site_file))
    influx = or_exit(lambda: load_aggregator_config(config_path or EXAMPLE_AGGREGATOR)).influxdb
    database = influx.database if influx.api == "v1" else (influx.bucket or influx.database)
    for path in write(site, outdir) + write_provisioning(outdir / "provisioning", influx.url, database):
        click.echo(f"wrote {path}")
    click.echo(f"the boards read database {database!r} at {influx.url}")
    if influx.api == "v2":
        click.echo(f"InfluxDB 2: the boards speak InfluxQL; map bucket {database!r} to a database of that name "
                   "(`influx v1 dbrp create`) and give Grafana a token", err=True)  # fmt: skip
    click.echo(
        f"mount {outdir / 'provisioning'} as /etc/grafana/provisioning and {outdir} as "
        "/var/lib/grafana/dashboards/lanewatch (see dashboards/README.md)"
    )


@dashboards.command("push")
@site_option
@click.option("--url", envvar="GRAFANA_URL", default="http://127.0.0.1:3000", show_default=True,
              help="Grafana's address (or GRAFANA_URL)")  # fmt: skip
def dashboards_push(site_file: Path, url: str) -> None:
    """Save the dashboards in Grafana's folder "LaneWatch" (token: GRAFANA_TOKEN). Re-running updates them."""
    import os

    from control_room.grafana import PushError, push
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    token = os.environ.get("GRAFANA_TOKEN", "")
    if not token:
        raise click.ClickException("set GRAFANA_TOKEN to a Grafana service account token (role Editor)")
    site = or_exit(lambda: load_site(site_file))
    try:
        push(site, url, token, say=click.echo)
    except PushError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@site_option
@click.option("--period", type=click.Choice(["day", "week", "month"]), default="day", show_default=True,
              help="a local calendar day, an ISO week (Monday to Sunday) or a calendar month")  # fmt: skip
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="a day in the period [default: today at the site: the period so far]")  # fmt: skip
@click.option("--out", "outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              show_default=True, help="where the Markdown, CSV and PNG files go")  # fmt: skip
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the aggregator's YAML configuration, for its influxdb: section [default: local InfluxDB 1.x]",
)
def report(site_file: Path, period: str, day: Optional[datetime], outdir: Path, config_path: Optional[Path]) -> None:
    """Daily, weekly and monthly reports for the control room (Markdown, CSV, PNG charts).

    Peaks per zone and when, hours yellow and red, busiest entrances, the hourly profile, device
    availability and notices sent, from the aggregator's InfluxDB: SITE-PERIOD-START.md with its CSV
    tables and PNG charts in --out.
    """
    from zoneinfo import ZoneInfo

    from aggregator.config import load_aggregator_config
    from aggregator.influx import Database, DatabaseError
    from control_room import reports
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    site = or_exit(lambda: load_site(site_file))
    config = or_exit(lambda: load_aggregator_config(config_path))
    when = day.date() if day else datetime.now(ZoneInfo(site.site.timezone)).date()
    db = Database(config.influxdb)
    try:
        with click.progressbar(length=len(reports.STEPS), label="querying InfluxDB", file=sys.stderr) as bar:
            collected = reports.collect(site, db, period, when, step=lambda _what: bar.update(1))
    except DatabaseError as exc:
        raise click.ClickException(f"{exc} (the report reads the aggregator's database: see --config)") from None
    finally:
        db.close()
    if not collected.peaks:
        where = f"database {config.influxdb.database!r} at {config.influxdb.url}"
        raise click.ClickException(
            f"nothing stored for the {period} from {collected.start:%Y-%m-%d %H:%M} to {collected.end:%Y-%m-%d %H:%M} "
            f"in {where}: is --config the aggregator's, and did it run then? (--date picks another {period})"
        )
    for path in reports.write(collected, outdir):
        click.echo(f"wrote {path}")
