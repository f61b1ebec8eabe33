"""``lanewatch aggregator``: run the aggregator, and measure how fast it drains a backlog."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from lanewatch import EXAMPLE_SITE

if TYPE_CHECKING:
    from lanewatch.mqttconfig import BrokerConfig
    from lanewatch.site.model import Site


site_option = click.option(
    "--site", "site_file", type=click.Path(dir_okay=False, path_type=Path), default=EXAMPLE_SITE,
    show_default="the example site", help="the site inventory",
)  # fmt: skip


@click.group()
def aggregator() -> None:
    """The central aggregator: ingest, roll-up, InfluxDB.

    Validates every device message (rejects go to a dead-letter topic), stores counts, heartbeats
    and availability in InfluxDB, and rolls entrances up into zone occupancy. A message is
    acknowledged to the broker only once its data is stored (or spooled while InfluxDB is down).
    """


@aggregator.command("run")
@site_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the aggregator's YAML configuration [default: local broker and InfluxDB 1.x on their usual ports]",
)
@click.option("--instance", help="override the config's instance id (one per running aggregator)")
@click.option("--verbose", "-v", is_flag=True, help="log every connection and batch detail")
def run_command(site_file: Path, config_path: Optional[Path], instance: Optional[str], verbose: bool) -> None:
    """Run until Ctrl-C or SIGTERM; then store and acknowledge what was taken, and stop.

    Several instances with the same share_group split the device stream (MQTT v5 shared
    subscription). The zone roll-up must see every message: run it in one instance, either beside
    the store role (the default) or alone (roles: [rollup]) in a share_group of its own.
    """
    import logging
    import signal

    from aggregator.config import load_aggregator_config
    from aggregator.service import Aggregator
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    site = or_exit(lambda: load_site(site_file))
    config = or_exit(lambda: load_aggregator_config(config_path))
    if instance:
        config = config.model_copy(update={"instance": instance})
    try:
        service = Aggregator(site, config)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    click.echo(
        f"aggregator {config.instance} for site {site.site.id}: roles {', '.join(config.roles)}; "
        f"broker {config.broker.host}:{config.broker.port}; InfluxDB {config.influxdb.url} ({config.influxdb.api})",
        err=True,
    )
    service.run()
    if service.failed:
        raise click.ClickException(f"{service.failed}; unacknowledged messages wait on the broker for the restart")


@aggregator.command("bench")
@click.option("--devices", type=click.IntRange(1, 100_000), default=400, show_default=True, help="simulated devices")
@click.option(
    "--windows", type=click.IntRange(1, 100_000), default=120, show_default=True, help="count windows per device"
)
@click.option(
    "--instances", type=click.IntRange(1, 16), default=1, show_default=True, help="aggregators sharing the stream"
)
@click.option("--json", "as_json", is_flag=True, help="print the results as one JSON object on stdout")
def bench_command(devices: int, windows: int, instances: int, as_json: bool) -> None:
    """Measure the aggregator's drain rate against a bare paho subscriber's, in one run.

    Starts a private Mosquitto and InfluxDB, queues a backlog of count windows and heartbeats (QoS 1)
    for each consumer's persistent session, then times each consumer from its connection until the
    backlog is drained: received and acknowledged (bare subscriber), stored in InfluxDB (aggregator).
    With --instances N, N aggregators share the stream (plus one roll-up instance), against N bare
    subscribers.
    """
    import json

    from aggregator.bench import run_bench

    results = run_bench(devices, windows, instances, progress=lambda text: click.echo(text, err=True))
    if as_json:
        click.echo(json.dumps(results))
        return
    click.echo(f"machine      {results['machine']}")
    click.echo(f"backlog      {results['messages']:,} messages ({results['count_windows']:,} count windows) "
               f"from {devices} devices")  # fmt: skip
    for key in ("bare", "aggregator"):
        drain = results[key]
        click.echo(f"{drain['consumer']:28} x{instances}  {drain['rate']:>8,} messages/s  ({drain['seconds']:.2f} s)")
    click.echo(f"ratio        {results['ratio']:.2f} (aggregator / bare subscriber)")


# --- alerts: the receivers' side ------------------------------------------------------------------


@click.group()
def alerts() -> None:
    """Crowd levels and diversion notices, live.

    What grid staff and the control room see when a zone fills: every zone's current level, and the
    notices as they are sent. Both read the broker only (retained levels, QoS 1 notices).
    """


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    help="a YAML file with a broker: section (host, port, username, password_file, TLS files) "
    "[default: a local broker on 1883]",
)  # fmt: skip


def _receiver(site_file: Path, config_path: Optional[Path]) -> tuple[Site, BrokerConfig]:
    from aggregator.alerts import ReceiverConfig
    from lanewatch.mqttconfig import BrokerConfig
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import load_model, or_exit

    site = or_exit(lambda: load_site(site_file))
    if config_path is None:
        return site, BrokerConfig()
    return site, or_exit(lambda: load_model(config_path, ReceiverConfig)).broker


@alerts.command("state")
@site_option
@config_option
@click.option("--wait", "wait_s", type=float, default=3.0, show_default=True, help="seconds to wait for the levels")
def alerts_state(site_file: Path, config_path: Optional[Path], wait_s: float) -> None:
    """Print every zone's current level, occupancy and coverage, from the retained state."""
    from aggregator.alerts import state_lines, states

    site, broker = _receiver(site_file, config_path)
    for line in state_lines(site, states(site, broker, wait_s)):
        click.echo(line)


@alerts.command("watch")
@site_option
@config_option
@click.option("--zone", help="only this zone and the zones inside it (e.g. a grid officer's grid)")
@click.option("--count", type=click.IntRange(1), help="stop after this many notices [default: run until Ctrl-C]")
def alerts_watch(site_file: Path, config_path: Optional[Path], zone: Optional[str], count: Optional[int]) -> None:
    """Show diversion notices as they arrive, coloured by level, with their actions and text."""
    from aggregator.alerts import watch

    site, broker = _receiver(site_file, config_path)
    if zone is not None and zone not in site.zones_by_id:
        raise click.BadParameter(f"no zone {zone!r}; zones: {', '.join(site.zones_by_id)}", param_hint="--zone")
    click.echo(
        f"watching notices for {zone or 'every zone'} of {site.site.id} on {broker.host}:{broker.port}", err=True
    )
    try:
        for line in watch(site, broker, zone, count):
            click.echo(line)
    except KeyboardInterrupt:
        pass


@click.group()
def dashboards() -> None:
    """The control room's Grafana boards, generated from the site inventory.

    Overview, Zone (one zone at a time), Devices and Trends, InfluxQL on the aggregator's InfluxDB.
    Install them either way: mount the files `build` writes (Grafana file provisioning), or `push`
    them to a running Grafana through its HTTP API.
    """


@dashboards.command("build")
@site_option
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
def dashboards_build(site_file: Path, outdir: Path) -> None:
    """Write the dashboards' JSON into OUTDIR and Grafana's provisioning files into OUTDIR/provisioning."""
    from aggregator.dashboards import write, write_provisioning
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    site = or_exit(lambda: load_site(site_file))
    for path in write(site, outdir) + write_provisioning(outdir / "provisioning"):
        click.echo(f"wrote {path}")
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

    from aggregator.grafana import PushError, push
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
              help="a day in the period [default: yesterday at the site]")  # fmt: skip
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

    from aggregator import reports
    from aggregator.config import load_aggregator_config
    from aggregator.influx import Database, DatabaseError
    from lanewatch.site import load_site
    from lanewatch.yamlconfig import or_exit

    site = or_exit(lambda: load_site(site_file))
    config = or_exit(lambda: load_aggregator_config(config_path))
    when = day.date() if day else datetime.now(ZoneInfo(site.site.timezone)).date() - timedelta(days=1)
    db = Database(config.influxdb)
    try:
        with click.progressbar(length=len(reports.STEPS), label="querying InfluxDB", file=sys.stderr) as bar:
            collected = reports.collect(site, db, period, when, step=lambda _what: bar.update(1))
    except DatabaseError as exc:
        raise click.ClickException(f"{exc} (the report reads the aggregator's database: see --config)") from None
    finally:
        db.close()
    for path in reports.write(collected, outdir):
        click.echo(f"wrote {path}")
