"""Command-line options that every package's commands share."""

from __future__ import annotations

from pathlib import Path

import click

from lanewatch import EXAMPLE_SITE

site_option = click.option(
    "--site", "site_file", type=click.Path(dir_okay=False, path_type=Path), default=EXAMPLE_SITE,
    show_default="the example site", help="the site inventory",
)  # fmt: skip
