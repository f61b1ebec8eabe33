"""`lanewatch site validate`: the example is valid, and each kind of mistake gets its precise line.

Each broken inventory is the example with one realistic edit, so the expected line numbers are
where a technician's editor would put the cursor.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from lanewatch.site import load_site
from lanewatch.site.model import Site
from tests.conftest import EXAMPLE_SITE, run_cli

EXAMPLE = EXAMPLE_SITE.read_text(encoding="utf-8")


class Broken(NamedTuple):
    """Replace ``old`` (which must occur once) by ``new``; expect these (line marker, path: message) lines."""

    old: str
    new: str
    expected: list[tuple[str, str]]


YIJIN_WEST_CAMERA = "    entrance: yijin-west\n    hardware: Raspberry Pi 5 + Camera Module 3 Wide\n"
TA_EAST_CAMERA = "    entrance: ta-east\n    hardware: Raspberry Pi 4 + Camera Module 3\n"

CASES = {
    "negative capacity": Broken(
        "    capacity: 1200\n", "    capacity: -5\n", [("capacity: -5", "zones[4].capacity: must be > 0, got -5")]
    ),
    "wrong type": Broken(
        "    capacity: 1500\n",
        "    capacity: lots\n",
        [
            (
                "capacity: lots",
                "zones[5].capacity: wrong type or value: expected a valid integer, "
                "unable to parse string as an integer, got 'lots'",
            )
        ],
    ),
    "missing field": Broken(
        "    kind: grid3\n    parent: west\n    capacity: 1300\n",
        "    kind: grid3\n    parent: west\n",
        [("  - id: yijin", "zones[3].capacity: missing required field")],
    ),
    "unknown field": Broken(
        "    area_m2: 2400\n",
        "    area_m3: 2400\n",
        [("area_m3", "zones[4].area_m3: unknown field 'area_m3' (did you mean 'area_m2'?)")],
    ),
    "duplicate id": Broken(
        "  - id: cam-ta-west\n",
        "  - id: cam-ta-east\n",
        [
            (
                "  - id: cam-ta-east\n    entrance: ta-west",
                "devices[16].id: duplicate id 'cam-ta-east' (already used by devices[8])",
            )
        ],
    ),
    "unknown reference": Broken(
        "    entrance: gong-west\n",
        "    entrance: gong-wset\n",
        [
            ("{id: gong-west,", "entrances[17]: no device counts entrance 'gong-west': add one under devices"),
            ("entrance: gong-wset", "devices[19].entrance: unknown entrance 'gong-wset' (did you mean 'gong-west'?)"),
        ],
    ),
    "cycle in the hierarchy": Broken(
        "    kind: grid2\n    parent: sfqx\n    capacity: 4000\n",
        "    kind: grid2\n    parent: yijin\n    capacity: 4000\n",
        [
            (
                "parent: yijin",
                "zones[1].parent: 'yijin' is a third-level grid ('grid3'); the parent of a second-level grid "
                "must be of kind 'area'",
            ),
            ("parent: yijin", "zones[1].parent: cycle in the hierarchy: west -> yijin -> west"),
        ],
    ),
    "entrance in no zone": Broken(
        "name: {zh: 塔巷东口, en: Ta Alley east gate}, zone: alleys-north,",
        "name: {zh: 塔巷东口, en: Ta Alley east gate},",
        [
            (
                "{id: ta-east,",
                "entrances[6].zone: the entrance belongs to no zone: set 'zone' to the third-level grid "
                "that 'in' leads into",
            )
        ],
    ),
    "entrance on a second-level grid": Broken(
        "en: Gong Alley east gate}, zone: alleys-south,",
        "en: Gong Alley east gate}, zone: east,",
        [
            (
                "{id: gong-east,",
                "entrances[9].zone: 'east' is a second-level grid; entrances join third-level grids (kind 'grid3')",
            )
        ],
    ),
    "sign driven from another entrance": Broken(
        "entrance: gong-east, device: cam-gong-east}",
        "entrance: gong-east, device: cam-anmin-east}",
        [
            (
                "{id: sign-gong-east,",
                "signs[6].device: 'cam-anmin-east' is at entrance 'anmin-east', not 'gong-east'; "
                "a sign is driven by a device at its own entrance",
            )
        ],
    ),
    "officer who is not an officer": Broken(
        "    officer: officer-zheng\n",
        "    officer: staff-guanglu-head\n",
        [("officer: staff-guanglu-head", "zones[5].officer: 'staff-guanglu-head' has role 'staff', not 'officer'")],
    ),
    "invalid id": Broken(
        "{id: sign-gong-east,",
        "{id: Sign_Gong_East,",
        [
            (
                "{id: Sign_Gong_East,",
                "signs[6].id: invalid id 'Sign_Gong_East': use 1-64 lowercase letters, digits or "
                "'-', not starting or ending with '-' (ids appear in MQTT topics)",
            )
        ],
    ),
    "duplicate key": Broken(
        "    capacity: 1300\n",
        "    capacity: 1300\n    capacity: 900\n",
        [
            (
                "capacity: 900",
                "zones[3].capacity: duplicate key (first on line {line_of:capacity: 1300}); "
                "YAML would silently keep the last one",
            )
        ],
    ),
    "neighbour of another kind": Broken(
        "    neighbours: [east]\n",
        "    neighbours: [nanhou]\n",
        [
            (
                "neighbours: [nanhou]",
                "zones[1].neighbours[0]: 'nanhou' is a third-level grid; neighbours must be of the same kind ('grid2')",
            )
        ],
    ),
    "counting line outside the image": Broken(
        YIJIN_WEST_CAMERA + "    lines: [{name: gate, start: [0.5, 0.0]",
        YIJIN_WEST_CAMERA + "    lines: [{name: gate, start: [1.5, 0.0]",
        [("start: [1.5, 0.0]", "devices[0].lines[0].start[0]: must be <= 1.0, got 1.5")],
    ),
    "counting line of zero length": Broken(
        TA_EAST_CAMERA + "    lines: [{name: gate, start: [0.5, 1.0], end: [0.5, 0.0]}]",
        TA_EAST_CAMERA + "    lines: [{name: gate, start: [0.5, 1.0], end: [0.5, 1.0]}]",
        [
            (
                "start: [0.5, 1.0], end: [0.5, 1.0]",
                "devices[8].lines[0]: start and end are the same point; a counting line needs two distinct points",
            )
        ],
    ),
    "unknown time zone": Broken(
        "timezone: Asia/Shanghai",
        "timezone: Asia/Shangai",
        [
            (
                "timezone: Asia/Shangai",
                "site.timezone: unknown time zone 'Asia/Shangai'; use an IANA name such as Asia/Shanghai",
            )
        ],
    ),
    "YAML syntax error": Broken(
        "    neighbours: [nanhou, alleys-north]\n",
        "    neighbours: [nanhou, alleys-north\n",
        [("    officer: officer-zhang", "YAML syntax error: expected ',' or ']', but got ':'")],
    ),
    "two areas": Broken(
        "  - id: west\n",
        "  - id: district\n    name: {zh: 南街街道, en: Nanjie Subdistrict}\n    kind: area\n"
        "    capacity: 50000\n\n  - id: west\n",
        [
            ("  - id: district", "zones[1]: 'district' (kind 'area') has no second-level grids under it"),
            (
                "    kind: area\n    capacity: 50000",
                "zones[1].kind: a second zone of kind 'area' (the first is zones[0]); a site has exactly one",
            ),
        ],
    ),
    "a line's counting rate measured far off": Broken(
        "end: [0.5, 1.0]}]\n    view: {zone: yijin, share: 0.06}",
        "end: [0.5, 1.0], measured: {rate_in: 1.8, rate_out: 0.93, crossings: 212}}]\n"
        "    view: {zone: yijin, share: 0.06}",
        [("measured: {rate_in: 1.8", "devices[0].lines[0].measured.rate_in: must be < 1.5, got 1.8")],
    ),
    "unknown zone, with a hint": Broken(
        "zone: alleys-south, width_m: 4.0, plan: [0.94, 0.6025]}\n  - {id: gong-east",
        "zone: alleys-soth, width_m: 4.0, plan: [0.94, 0.6025]}\n  - {id: gong-east",
        [("{id: anmin-east,", "entrances[8].zone: unknown zone 'alleys-soth' (did you mean 'alleys-south'?)")],
    ),
}


def _line_of(text: str, marker: str) -> int:
    assert text.count(marker) == 1, f"marker {marker!r} must occur once in the broken file"
    return text[: text.index(marker)].count("\n") + 1


def _run_validate(path: Path) -> tuple[int, list[str]]:
    result = run_cli("site", "validate", str(path))
    return result.exit_code, result.stderr.splitlines()


def test_example_inventory_is_valid() -> None:
    result = run_cli("site", "validate", str(EXAMPLE_SITE))
    assert result.exit_code == 0, result.output
    assert "OK (9 zones, 18 entrances, 20 devices, 10 signs)" in result.output


@pytest.mark.parametrize("name", list(CASES))
def test_broken_inventory_gives_one_precise_line_per_problem(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    assert EXAMPLE.count(case.old) == 1, f"the edit for {name!r} must match the example exactly once"
    text = EXAMPLE.replace(case.old, case.new)
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")

    code, lines = _run_validate(path)

    expected = []
    for marker, message in case.expected:
        if "{line_of:" in message:
            inner = message.split("{line_of:")[1].split("}")[0]
            message = message.replace(f"{{line_of:{inner}}}", str(_line_of(text, inner)))
        expected.append(f"{path}:{_line_of(text, marker)}: {message}")
    assert code == 1
    assert lines == [*expected, f"{path}: {len(expected)} problem(s)"]


def test_missing_and_empty_files_are_explained(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    code, lines = _run_validate(empty)
    assert code == 1
    assert lines[0] == f"{empty}: expected a mapping with site, zones, entrances, devices; got an empty file"

    missing = tmp_path / "nope.yaml"
    code, lines = _run_validate(missing)
    assert code == 1
    assert lines[0] == f"{missing}: cannot read the file: No such file or directory"


def test_the_installed_command_reports_without_a_traceback(tmp_path: Path) -> None:
    """The real entry point, as a technician runs it: exit 1, the problem lines, no Python traceback."""
    path = tmp_path / "site.yaml"
    path.write_text(EXAMPLE.replace("    capacity: 1200\n", "    capacity: -5\n"), encoding="utf-8")
    lanewatch = Path(sys.executable).with_name("lanewatch")
    result = subprocess.run(
        [str(lanewatch), "site", "validate", str(path), str(EXAMPLE_SITE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "zones[4].capacity: must be > 0, got -5" in result.stderr
    assert f"{EXAMPLE_SITE}: OK" in result.stdout


def test_show_prints_the_hierarchy_with_capacities() -> None:
    result = run_cli("site", "show", str(EXAMPLE_SITE))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    site = load_site(EXAMPLE_SITE)
    for zone in site.zones:
        row = next(line for line in lines if f" {zone.id}  {zone.name.zh}" in line or line.startswith(f"{zone.id}  "))
        assert f"capacity {zone.capacity:,} persons" in row
    # the tree nests: a third-level grid is drawn under its second-level grid
    west = next(i for i, line in enumerate(lines) if "── west  " in line)
    yijin = next(i for i, line in enumerate(lines) if "── yijin  " in line)
    assert yijin > west
    assert lines[yijin].startswith("│   ")
    assert sum("entrance " in line for line in lines) == len(site.entrances)
    as_json = run_cli("site", "show", str(EXAMPLE_SITE), "--json")
    assert as_json.exit_code == 0, as_json.output
    assert Site.model_validate_json(as_json.stdout) == site  # the checked inventory, whole


def test_zone_occupancy_rolls_up_through_the_hierarchy() -> None:
    """Any counts at the entrances give a parent the sum of its children's occupancy.

    This is what makes the lane mouths on Nanhou Street count for the lanes yet cancel out for
    the whole area.
    """
    site = load_site(EXAMPLE_SITE)
    rng = random.Random(7)
    net = {e.id: rng.randint(-300, 300) for e in site.entrances}  # in - out at each entrance

    def occupancy(zone_id: str) -> int:
        return sum(sign * net[e.id] for e, sign in site.boundary_entrances(zone_id))

    for zone in site.zones:
        children = site.children(zone.id)
        if children:
            assert occupancy(zone.id) == sum(occupancy(c.id) for c in children), zone.id
    outer = [e for e in site.entrances if e.outside is None]
    assert occupancy(site.root.id) == sum(net[e.id] for e in outer)


def test_the_site_time_zone_is_known_on_a_minimal_image_without_a_zoneinfo_database(tmp_path: Path) -> None:
    """A minimal Debian or Pi image may lack tzdata: the inventory still loads (the tzdata wheel stands in)."""
    command = [sys.executable, "-m", "console", "site", "validate", str(EXAMPLE_SITE)]
    env = {**os.environ, "PYTHONTZPATH": str(tmp_path)}  # an empty folder instead of /usr/share/zoneinfo
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "OK (" in result.stdout
