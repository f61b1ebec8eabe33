"""``lanewatch aggregator bench``: how fast the aggregator drains a backlog, against a bare subscriber."""

from __future__ import annotations

import click


@click.command("bench")
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

    from harness.sessions import run_bench

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
