"""Device configurations generated from the site inventory load as they are and agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_agent_config
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE, run_cli

SITE = load_site(EXAMPLE_SITE)


@pytest.mark.parametrize("device", [d.id for d in SITE.devices])
def test_every_device_of_the_example_gets_a_loadable_config(device: str, tmp_path: Path) -> None:
    out = tmp_path / f"{device}.yaml"
    result = run_cli("site", "device-config", str(EXAMPLE_SITE), device, "--state-dir", str(tmp_path), "--out",
                     str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    config = load_agent_config(out)
    inventory = next(d for d in SITE.devices if d.id == device)
    assert (config.site, config.device, config.entrance) == (SITE.site.id, device, inventory.entrance)
    assert config.into == next(e.zone for e in SITE.entrances if e.id == inventory.entrance)  # named on pictures
    assert config.lines == inventory.lines
    signs = [s.id for s in SITE.signs if s.device == device]
    assert ([config.sign.id] if config.sign else []) == signs
    assert "password" not in out.read_text()  # no secret is ever written


def test_an_unknown_device_lists_the_known_ones() -> None:
    result = run_cli("site", "device-config", str(EXAMPLE_SITE), "cam-nowhere")
    assert result.exit_code == 1
    assert "no device 'cam-nowhere' in site 'sanfang-qixiang'; its devices are: cam-yijin-west" in result.stderr
