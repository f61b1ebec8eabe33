"""Where Debian's server programs are, and which package to install when one is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

#: Where Debian installs them; /usr/sbin is not on every user's PATH.
SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
#: The Debian package that carries each program.
APT_PACKAGES = {
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "influxd": "influxdb",
    "victoria-metrics": "victoria-metrics",
}


class MissingBinaryError(RuntimeError):
    """A program LaneWatch runs is not installed; the message names the package to install."""


def find_binary(name: str) -> str:
    found = shutil.which(name) or next((str(Path(d) / name) for d in SEARCH_DIRS if (Path(d) / name).is_file()), None)
    if found is None:
        package = APT_PACKAGES.get(name, name)
        raise MissingBinaryError(
            f"{name} is not installed: run `sudo apt-get install {package}` (Debian's package that carries it; "
            "or scripts/setup, which installs everything LaneWatch needs)"
        )
    return found
