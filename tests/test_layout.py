"""The layout is the architecture: each floor imports only the floors below it, and nothing imports in a circle.

Floors, bottom up (pyproject.toml, ``[tool.importlinter]``): the shared core ``lanewatch``; the device
``edge_agent`` and the ``aggregator`` service, neither importing the other; ``provisioning`` (site set-up);
``control_room`` and the ``harness``, neither importing the other; ``console`` (the command and the demo).
import-linter reads every import, also those inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("lanewatch", "edge_agent", "aggregator", "provisioning", "control_room", "harness", "console")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the packages importable from ``root`` (first on the path), with the project's contracts."""
    command = [
        str(Path(sys.executable).with_name("lint-imports")),
        "--config",
        str(REPO / "pyproject.toml"),
        "--no-cache",
    ]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)


def test_every_floor_imports_only_the_floors_below_it_and_nothing_imports_in_a_circle() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages to break on purpose."""
    for package in (*PACKAGES, "firmware_config"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("lanewatch/contract.py", "import aggregator.service", "aggregator.service"),  # the core reaching up
        ("lanewatch/site/model.py", "from console.demo import runner", "console.demo"),
        ("edge_agent/agent.py", "from aggregator import levels", "aggregator.levels"),  # the device and the centre
        ("aggregator/store.py", "from control_room import reports", "control_room.reports"),
        ("aggregator/levels.py", "from aggregator import zonewatch", ".levels -> .zonewatch"),  # a circle
    ],
)
def test_an_import_against_the_floors_or_in_a_circle_is_caught(tree: Path, module: str, line: str, broken: str) -> None:
    path = tree / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout
    assert "BROKEN" in result.stdout
    assert broken in result.stdout


def test_one_place_makes_mqtt_clients() -> None:
    """Every client of the project gets its protocol, TLS, login, client id and Last Will from one factory."""
    import ast

    makers = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Client":
                    makers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert len(makers) == 1, makers
    assert makers[0].startswith("lanewatch/mqttconfig.py:")
