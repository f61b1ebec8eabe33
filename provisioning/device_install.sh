#!/usr/bin/env bash
# Install this LaneWatch device bundle on the device it was made for, as root:
#   1. the software, into a virtual environment (/opt/lanewatch/venv): from this bundle's wheels/ alone
#      when it carries them all (no internet needed), else LaneWatch from wheels/ and the rest from the
#      package index the device reaches;
#   2. then `lanewatch agent install`: the service user, /etc/lanewatch (configuration, login, model),
#      /var/lib/lanewatch, the systemd unit, and the self-test.
# Options are passed on to `lanewatch agent install` (see its --help). LANEWATCH_VENV moves the software.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${LANEWATCH_VENV:-/opt/lanewatch/venv}"
say() { echo "install: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "run it as root: sudo $0"
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  say "python3 is missing: sudo apt-get install python3 python3-venv"
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
  say "LaneWatch needs Python 3.9 or newer; this device has $(python3 -V 2>&1)"
  exit 1
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  say "Python's venv module is missing: sudo apt-get install python3-venv"
  exit 1
fi

own=("$here"/wheels/lanewatch-*.whl)
if [ ! -f "${own[0]}" ]; then
  say "this bundle has no wheels/lanewatch-*.whl: make it again with \`lanewatch site device-bundle\`"
  exit 1
fi
count=$(find "$here/wheels" -name '*.whl' | wc -l)
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  # system site packages: Raspberry Pi OS's picamera2 comes from apt
  python3 -m venv --system-site-packages "$venv"
fi
if [ "$count" -gt 1 ]; then
  say "installing LaneWatch from the bundle's $count wheels (no network)"
  "$venv/bin/python" -m pip install --quiet --no-index --find-links "$here/wheels" "${own[0]}[edge]"
else
  say "installing LaneWatch from the bundle, its dependencies from the package index"
  "$venv/bin/python" -m pip install --quiet --find-links "$here/wheels" "${own[0]}[edge]"
fi
# this bundle's LaneWatch, even when the same version is already there (a rebuilt bundle)
"$venv/bin/python" -m pip install --quiet --no-index --no-deps --force-reinstall "${own[0]}"
exec "$venv/bin/lanewatch" agent install "$here" --venv "$venv" "$@"
