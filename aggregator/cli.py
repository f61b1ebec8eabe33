"""``lanewatch aggregator run``: the aggregator service (its bench is added by the harness)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from lanewatch.cliopts import site_option


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
