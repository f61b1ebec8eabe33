"""``lanewatch site``: check a site inventory, show it, generate the broker's and the devices' configuration."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

if TYPE_CHECKING:
    from lanewatch.site import Site


@click.group()
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
@click.option("--json", "as_json", is_flag=True, help="the checked inventory as JSON, defaults filled in")
def site_show(file: Path, as_json: bool) -> None:
    """Print FILE's hierarchy as a tree: area, grids, entrances, with capacities and who is responsible."""
    loaded = _load_or_exit(file)
    click.echo(loaded.model_dump_json(indent=1) if as_json else _render(loaded))


@site.command("device-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("device_id")
@click.option("--source", help="frame source [default: picamera2 for cameras, camera:0 otherwise]")
@click.option("--model", "model_path", help="TFLite model path on the device")
@click.option("--state-dir", help="where the device keeps its outbox and totals [default: /var/lib/lanewatch]")
@click.option("--broker-host", default="127.0.0.1", show_default=True)
@click.option("--broker-port", type=int, default=8883, show_default=True, help="the port broker-config listens on")
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


@site.command("device-bundle")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("broker_folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("device_id")
@click.option(
    "--model",
    "model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the detector (.tflite) the device runs; required for a camera",
)
@click.option("--model-licence", help="the model's licence, when the model does not say it (e.g. Apache-2.0)")
@click.option("--source", help="frame source [default: picamera2 for cameras, serial:/dev/ttyAMA0 for counters]")
@click.option("--sign-port", help="the sign's serial port on the device [default: /dev/ttyUSB0]")
@click.option(
    "--broker-host",
    help="the broker's name or address as devices reach it [default: the first --tls-host of broker-config]",
)
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="put these wheels in the bundle (`lanewatch site wheelhouse`): the device installs offline",
)
@click.option("--rotate", is_flag=True, help="give the device a new password and certificate first")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bundles"),
    show_default=True,
    help="the bundle goes into OUT/DEVICE_ID/",
)
def site_device_bundle(
    file: Path, broker_folder: Path, device_id: str, model: Optional[Path], model_licence: Optional[str],
    source: Optional[str], sign_port: Optional[str], broker_host: Optional[str], wheelhouse: Optional[Path],
    rotate: bool, out: Path,
) -> None:  # fmt: skip
    """Make DEVICE_ID's bundle: all it needs to count, from the inventory FILE and BROKER_FOLDER
    (the folder `site broker-config` wrote).

    Its configuration with the broker's address, port, username and TLS filled in, its password,
    key and certificate, the CA, the model and its licence, the systemd unit, LaneWatch's wheel (and
    with --wheelhouse every wheel it needs) and an `install` script. Copy the folder to the device and
    run `sudo ./DEVICE_ID/install`, then `sudo systemctl enable --now lanewatch-agent`. A replacement
    device takes the same bundle. With --rotate, reload the broker afterwards (it rereads its passwords).
    """
    from provisioning.brokerconfig import BrokerConfigError
    from provisioning.bundle import BundleError, make_bundle

    loaded = _load_or_exit(file)
    try:
        bundle = make_bundle(loaded, broker_folder, device_id, out, model=model, model_licence=model_licence,
                             source=source, sign_port=sign_port, broker_host=broker_host, wheelhouse=wheelhouse,
                             rotate_secret=rotate)  # fmt: skip
    except (BundleError, BrokerConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {bundle.folder}/ (mode 0700: it holds {device_id}'s password and key)")
    click.echo(f"  broker {bundle.broker} with TLS as {device_id}; {bundle.wheels} wheel(s)"
               + ("" if bundle.wheels > 1 else ": the device needs a package index for the rest"))  # fmt: skip
    if bundle.model is not None:
        click.echo(f"  model {bundle.model.line()}")
    if rotate:
        click.echo("  new password and certificate: reload the broker now (sudo systemctl reload mosquitto)")
    click.echo(f"next, on the device: sudo ./{device_id}/install && sudo systemctl enable --now lanewatch-agent")


@site.command("wheelhouse")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="MACHINE:PYTHON",
    help="a device kind, e.g. aarch64:3.11 (Raspberry Pi OS 12), aarch64:3.9 (Debian 11); repeat "
    "[default: aarch64 and x86_64, Python 3.9 and 3.11]",
)
@click.option(
    "--extra",
    type=click.Choice(["edge", "edge-tflite"]),
    default="edge",
    show_default=True,
    help="edge-tflite: the legacy interpreter, for devices LiteRT has no wheel for",
)
def site_wheelhouse(out: Path, targets: tuple[str, ...], extra: str) -> None:
    """Fetch every wheel a counting device needs into OUT, once, on a machine with a package index;
    bundles made with `--wheelhouse OUT` then install with no network.

    Wheels for devices with glibc 2.31 or newer: Debian 11/12, Raspberry Pi OS 11/12, Ubuntu 20.04+,
    JetPack 5/6. Devices pick what fits them from the same folder.
    """
    from provisioning.bundle import BundleError
    from provisioning.wheelhouse import DEFAULT_TARGETS, Target, build_wheelhouse

    try:
        kinds = [Target.parse(text) for text in targets or DEFAULT_TARGETS]
        wheels = build_wheelhouse(out, kinds, extra=extra, say=lambda text: click.echo(text, err=True))
    except (ValueError, BundleError) as exc:
        raise click.ClickException(str(exc)) from None
    size = sum(wheel.stat().st_size for wheel in wheels) / 1e6
    click.echo(f"wrote {out}/: {len(wheels)} wheels, {size:.0f} MB, for {', '.join(map(str, kinds))}")


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
    from provisioning.brokerconfig import BrokerConfigError, generate

    site = _load_or_exit(file)
    try:
        files = generate(site, folder, port=port, host=bind, tls_hosts=tls_hosts, outage_hours=outage_hours)
    except BrokerConfigError as exc:
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
