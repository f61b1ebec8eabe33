"""Proof on arm64: a device bundle installed with no network into Debian 11 and 12 arm64 roots under
qemu-user, its self-test against a broker on this host, and its counts on the asset clips equal to x86's.

For each Debian release: an arm64 root (mmdebstrap, minbase with python3 and python3-venv, cached as a
tarball), a fresh copy of it, the bundle of a camera device (made here with a wheelhouse for aarch64)
copied in and installed by its own `install` script with pip configured for no index, the self-test
that script runs (broker over TLS on 127.0.0.1, a clip as the camera), then `agent eval` on the clips
with both models, compared with the same command on this machine.

Run as root, through `scripts/arm64-proof` (it installs mmdebstrap and a qemu that runs LiteRT):

    sudo scripts/arm64-proof [--suite bookworm --suite bullseye] [--cpu cortex-a72] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness.assets import assets_folder
from harness.servers import Mosquitto
from lanewatch import EXAMPLE_SITE
from lanewatch.site import load_site

MIRROR = "http://deb.debian.org/debian"
PYTHONS = {"bullseye": "3.9", "bookworm": "3.11"}
DEVICE = "cam-ta-east"  # a camera without a sign: the root has no serial port
CACHE = Path(os.environ.get("LANEWATCH_ARM64_CACHE", "/var/cache/lanewatch-arm64"))
CLIPS = ("TUD-Campus", "TUD-Stadtmitte")
MODELS = {
    "ssd": "ssd_mobilenet_v1_coco_quant/detect.tflite",
    "yolov8n": "yolov8n_coco/yolov8n_full_integer_quant.tflite",
}
LINE = "320,0,320,480"
LANEWATCH = str(Path(sys.executable).with_name("lanewatch"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=sorted(PYTHONS), help="Debian release [default: both]")
    parser.add_argument("--cpu", default="cortex-a72", help="QEMU_CPU: cortex-a72 (Pi 4) or cortex-a76 (Pi 5)")
    parser.add_argument("--fresh", action="store_true", help="build the roots again instead of the cached ones")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("arm64_proof: run it as root (chroot, mounts): sudo scripts/arm64-proof")
    suites = args.suite or ["bullseye", "bookworm"]
    assets = assets_folder()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lanewatch-arm64-", dir="/var/tmp") as scratch:
        work = Path(scratch)
        reference = {key: _eval([LANEWATCH], assets, key) for key in _cases()}
        _say(f"x86 counts: {reference}")
        broker = Mosquitto.for_site(load_site(EXAMPLE_SITE), work / "broker")
        broker.start()
        try:
            wheels = work / "wheels"
            targets = [arg for suite in suites for arg in ("--target", f"aarch64:{PYTHONS[suite]}")]
            _run([LANEWATCH, "site", "wheelhouse", str(wheels), *targets])
            model = assets / "models" / MODELS["yolov8n"]
            _run([LANEWATCH, "site", "device-bundle", str(EXAMPLE_SITE), str(broker.files.folder), DEVICE,
                  "--model", str(model), "--source", "/opt/footage/TUD-Campus.mp4", "--broker-host", "127.0.0.1",
                  "--wheelhouse", str(wheels), "--out", str(work / "bundles")])  # fmt: skip
            results = [
                _prove(suite, work, assets, reference, args.cpu, args.fresh) for suite in suites
            ]  # one root at a time: each takes the machine's cores
        finally:
            broker.stop()
    report = {"cpu": args.cpu, "seconds": round(time.monotonic() - started), "x86": _keyed(reference),
              "roots": results, "all_equal": all(r["equal"] and r["selftest_rc"] == 0 for r in results)}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print(report)
    sys.exit(0 if report["all_equal"] else 1)


def _cases() -> list[tuple[str, str]]:
    return [(clip, model) for clip in CLIPS for model in MODELS]


def _prove(suite: str, work: Path, assets: Path, reference: dict, cpu: str, fresh: bool) -> dict[str, object]:
    tarball = _root_tarball(suite, fresh)
    root = work / f"root-{suite}"
    root.mkdir()
    _run(["tar", "-C", str(root), "-xf", str(tarball)])
    (root / "opt" / "footage").mkdir(parents=True)
    (root / "opt" / "models").mkdir(parents=True)
    for clip in CLIPS:
        shutil.copy2(assets / "videos" / clip / f"{clip}.mp4", root / "opt" / "footage")
    for name, relative in MODELS.items():
        shutil.copy2(assets / "models" / relative, root / "opt" / "models" / f"{name}.tflite")
    shutil.copytree(work / "bundles" / DEVICE, root / "root" / DEVICE)
    with _mounted(root):
        began = time.monotonic()
        installed = _chroot(root, cpu, [f"/root/{DEVICE}/install"])
        install_s = time.monotonic() - began
        _say(f"{suite}: install + self-test in {install_s:.0f} s, exit {installed.returncode}")
        python = _chroot(root, cpu, ["/opt/lanewatch/venv/bin/python", "-V"]).stdout.strip()
        counts = {}
        for clip, model in _cases():
            command = ["/opt/lanewatch/venv/bin/lanewatch"]
            counts[(clip, model)] = _eval(command, Path("/opt"), (clip, model), root=root, cpu=cpu)
            _say(f"{suite}: {clip} {model}: {counts[(clip, model)]} (x86 {reference[(clip, model)]})")
    shutil.rmtree(root)
    return {
        "suite": suite, "python": python, "install_s": round(install_s), "selftest_rc": installed.returncode,
        "selftest": [line for line in installed.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "WARN")],
        "install_log": installed.stderr.strip().splitlines()[-3:], "counts": _keyed(counts),
        "equal": counts == reference,
    }  # fmt: skip


def _root_tarball(suite: str, fresh: bool) -> Path:
    """A minimal arm64 Debian with Python and venv: all a device bundle asks of its OS."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"{suite}-arm64.tar"
    if fresh or not tarball.exists():
        _say(f"building the {suite} arm64 root (mmdebstrap under qemu; minutes)")
        partial = tarball.with_suffix(".partial.tar")
        _run(["mmdebstrap", "--quiet", "--arch=arm64", "--variant=minbase", "--include=python3,python3-venv",
              suite, str(partial), MIRROR])  # fmt: skip
        partial.replace(tarball)
    return tarball


@contextlib.contextmanager
def _mounted(root: Path) -> Iterator[None]:
    # No /sys: under qemu-user, LiteRT's cpuinfo would read this x86 host's CPU topology there and crash
    # (segmentation fault in XNNPACK); without it, it warns that it cannot list the processors and runs.
    mounts = [(["-t", "proc", "proc"], root / "proc"), (["--bind", "/dev"], root / "dev")]
    done: list[Path] = []
    try:
        for options, target in mounts:
            target.mkdir(parents=True, exist_ok=True)
            _run(["mount", *options, str(target)])
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "--lazy", str(target)], check=False)


def _chroot(root: Path, cpu: str, command: list[str]) -> subprocess.CompletedProcess:
    """``command`` in the arm64 root, its environment a device's: no pip configuration, no index."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": cpu,
           "PIP_CONFIG_FILE": "/dev/null", "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}  # fmt: skip
    return subprocess.run(["chroot", str(root), *command], env=env, capture_output=True, text=True, check=False)


def _eval(
    command: list[str], base: Path, case: tuple[str, str], root: Path | None = None, cpu: str = ""
) -> tuple[int, int]:
    clip, model = case
    if root is None:
        video, weights = base / "videos" / clip / f"{clip}.mp4", base / "models" / MODELS[model]
    else:
        video, weights = base / "footage" / f"{clip}.mp4", base / "models" / f"{model}.tflite"
    args = [*command, "agent", "eval", str(video), "--model", str(weights), "--line", LINE, "--json"]
    done = _chroot(root, cpu, args) if root is not None else subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"agent eval failed ({' '.join(args)}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return result["in"], result["out"]


def _keyed(counts: dict) -> dict[str, list[int]]:
    return {f"{clip} {model}": list(value) for (clip, model), value in counts.items()}


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed:\n{done.stderr[-3000:]}")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print(report: dict) -> None:
    print(f"arm64 proof, QEMU_CPU={report['cpu']}, {report['seconds']} s in all")
    for root in report["roots"]:
        print(f"\nDebian {root['suite']} arm64, {root['python']}: bundle installed offline and self-tested in "
              f"{root['install_s']} s (exit {root['selftest_rc']})")  # fmt: skip
        for line in root["selftest"]:
            print(f"  {line}")
        print("  counts (in, out) arm64 | x86:")
        for key, value in root["counts"].items():
            print(f"    {key:28} {tuple(value)} | {tuple(report['x86'][key])}")
        print(f"  equal to x86: {'yes' if root['equal'] else 'NO'}")


if __name__ == "__main__":
    main()
