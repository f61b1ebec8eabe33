"""The control room's Grafana boards: generated from the inventory, committed, loadable by Grafana's own
models, and every panel's query returns data from what the aggregator stored for a real week."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from aggregator.config import load_aggregator_config
from control_room.dashboards import LEVEL_MAPPINGS, build, write, write_provisioning
from lanewatch import EXAMPLE_AGGREGATOR
from lanewatch.site import load_site
from tests.conftest import EXAMPLE_SITE, REPO, ReplayedWeek, run_cli

SITE = load_site(EXAMPLE_SITE)
BOARDS = build(SITE)
#: Grafana's core panel plugins that the boards use (all in Grafana 10 and 11).
CORE_PANELS = {"stat", "bargauge", "timeseries", "table", "state-timeline", "canvas"}


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, InfluxQL) for every panel target and annotation of a dashboard."""
    out = [(f"{board['uid']} / {p['title']}", t["query"]) for p in board["panels"] for t in p["targets"]]
    out += [(f"{board['uid']} / annotation {a['name']}", a["query"]) for a in board["annotations"]["list"]]
    return out


def expand(query: str, variables: dict[str, tuple[str, str]]) -> str:
    """What Grafana sends: $timeFilter, $__interval and each variable's value or ${name:text}."""
    query = query.replace("$timeFilter", "time >= now() - 9d").replace("$__interval", "5m")
    for name, (text, value) in variables.items():
        query = query.replace(f"${{{name}:text}}", text).replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert not re.search(r"\$(?!tag_)[\w{]", query), query  # nothing left unexpanded
    return query


def test_the_committed_dashboards_are_what_the_generator_builds(tmp_path: Path) -> None:
    influx = load_aggregator_config(EXAMPLE_AGGREGATOR).influxdb
    written = write(SITE, tmp_path) + write_provisioning(tmp_path / "provisioning", influx.url, influx.database)
    for path in written:
        committed = REPO / "dashboards" / path.relative_to(tmp_path)
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed} is stale: run `lanewatch dashboards build dashboards`"
        )


def test_the_build_command_writes_dashboards_and_provisioning(tmp_path: Path) -> None:
    result = run_cli("dashboards", "build", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == sorted(BOARDS)
    provider = (tmp_path / "out" / "provisioning" / "dashboards" / "lanewatch.yaml").read_text()
    assert "folderUid: lanewatch" in provider
    datasource = (tmp_path / "out" / "provisioning" / "datasources" / "lanewatch.yaml").read_text()
    assert "uid: lanewatch-influxdb" in datasource
    assert "$INFLUXDB_PASSWORD" in datasource  # from Grafana's environment, never in the file
    assert "dbName: sanfang-qixiang" in datasource  # what the example aggregator writes to
    assert "'sanfang-qixiang'" in result.output


def test_the_boards_read_the_database_the_aggregator_configuration_names(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text("influxdb: {url: 'http://10.0.0.5:8086', database: lanes-prod}\n")
    result = run_cli("dashboards", "build", "--config", str(config), str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    datasource = (tmp_path / "out" / "provisioning" / "datasources" / "lanewatch.yaml").read_text()
    assert "url: http://10.0.0.5:8086" in datasource
    assert "dbName: lanes-prod" in datasource
    broken = tmp_path / "broken.yaml"
    broken.write_text("influxdb: {api: v3}\n")
    refused = run_cli("dashboards", "build", "--config", str(broken), str(tmp_path / "out2"))
    assert refused.exit_code != 0
    assert "api" in refused.output


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_each_dashboard_loads_in_grafanas_own_dashboard_model(name: str) -> None:
    board = BOARDS[name]
    loaded = json.loads(json.dumps(Dashboard.from_json(json.loads(json.dumps(board))), cls=JSONEncoder))
    assert loaded["uid"] == board["uid"]
    assert [p["title"] for p in loaded["panels"]] == [p["title"] for p in board["panels"]]
    assert [[t["query"] for t in p["targets"]] for p in loaded["panels"]] == [
        [t["query"] for t in p["targets"]] for p in board["panels"]
    ]
    assert {p["type"] for p in board["panels"]} <= CORE_PANELS
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:  # on Grafana's 24-column grid, no two panels overlap
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine


def test_the_zone_board_offers_every_zone_with_its_own_boundary_entrances() -> None:
    (variable,) = BOARDS["zone.json"]["templating"]["list"]
    options = {o["text"]: set(o["value"].split("|")) for o in variable["options"]}
    assert set(options) == {z.id for z in SITE.zones}
    assert options["nanhou"] == {e.id for e, _sign in SITE.boundary_entrances("nanhou")}
    assert "yijin-east" in options["nanhou"]  # a lane mouth bounds both the lane and the street
    assert options[SITE.root.id] == {e.id for e in SITE.entrances if e.outside is None}


def test_every_panel_query_returns_data_from_a_replayed_week(replayed_week: ReplayedWeek) -> None:
    """Each query of each board, for every zone of the zone board, against what the aggregator stored."""
    (variable,) = BOARDS["zone.json"]["templating"]["list"]
    empty = []
    checked = 0
    for name, board in BOARDS.items():
        choices = [{"zone": (o["text"], o["value"])} for o in variable["options"]] if name == "zone.json" else [{}]
        for variables in choices:
            for what, query in queries(board):
                if variables.get("zone") and "warnings" in query and not _warned(replayed_week, variables):
                    continue  # a zone that was never warned has no warnings to show
                answer = requests.get(
                    f"{replayed_week.influx.url}/query",
                    params={"db": replayed_week.database, "q": expand(query, variables)},
                    timeout=60,
                ).json()
                result = answer["results"][0]
                assert "error" not in result, (what, result["error"])
                if not any(series["values"] for series in result.get("series", [])):
                    empty.append(f"{what} {variables}")
                checked += 1
    assert empty == []
    assert checked > 60


def _warned(week: ReplayedWeek, variables: dict[str, tuple[str, str]]) -> bool:
    zone = variables["zone"][0]
    return any(n.kind == "predicted_red" and n.zone == zone for n in week.notices)


def test_queries_only_name_measurements_and_fields_the_aggregator_writes() -> None:
    schema = (REPO / "docs" / "influxdb.md").read_text()
    for _board, board in BOARDS.items():
        for what, query in queries(board):
            for measurement in re.findall(r'FROM "(\w+)"', query):
                assert f"`{measurement}`" in schema, (what, measurement)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_each_board_speaks_chinese_first_and_names_zones_and_gates(name: str) -> None:
    """Control-room staff read Chinese: every panel title starts in Chinese, and series named by a zone's
    or a gate's id are shown by its Chinese and English names; tables show zones by name too."""
    board = BOARDS[name]
    cjk = re.compile(r"[\u4e00-\u9fff]")
    assert cjk.match(board["title"].split(" · ")[1])
    assert all(cjk.match(p["title"]) for p in board["panels"]), [p["title"] for p in board["panels"]]
    for p in board["panels"]:
        shown = {o["matcher"]["options"]: o["properties"][0]["value"] for o in p["fieldConfig"]["overrides"]}
        if p["type"] == "table":
            continue
        for zone in SITE.zones:
            assert shown[zone.id] == f"{zone.name.zh} {zone.name.en}"
        for entrance in SITE.entrances:
            assert shown[entrance.id].startswith(entrance.name.zh)


def test_the_overview_map_draws_every_zone_and_gate_of_the_plan_from_fields_a_replay_returns(
    replayed_week: ReplayedWeek,
) -> None:
    """The site map: each zone's boxes coloured by its own level, its people now, each gate's people in over 5
    minutes; every field the canvas names is one its queries return from what the aggregator stored."""
    board = BOARDS["overview.json"]
    (site_map,) = [p for p in board["panels"] if p["type"] == "canvas"]
    assert site_map["gridPos"]["y"] == 0  # the first thing on the big screen
    elements = site_map["options"]["root"]["elements"]
    coloured = {e["name"].split()[0]: e["background"]["color"]["field"] for e in elements if e["type"] == "rectangle"}
    planned = [z for z in SITE.zones if z.plan]
    assert coloured == {z.id: f"{z.id} level" for z in planned}
    assert sum(e["type"] == "rectangle" for e in elements) == sum(len(z.plan) for z in planned)
    gates = {e["name"] for e in elements if e["type"] == "ellipse"}
    assert gates == {e.id for e in SITE.entrances if e.plan is not None} == {e.id for e in SITE.entrances}
    named = {e["background"]["color"].get("field") for e in elements} | {e["config"]["text"].get("field")
                                                                          for e in elements}  # fmt: skip
    named.discard(None)
    returned = set()
    for t in site_map["targets"]:
        answer = requests.get(f"{replayed_week.influx.url}/query", timeout=60, params={
            "db": replayed_week.database, "q": expand(t["query"], {})}).json()  # fmt: skip
        for series in answer["results"][0].get("series", []):
            tag = next(iter(series["tags"].values()))
            returned.add(t["alias"].replace("$tag_zone", tag).replace("$tag_entrance", tag))
    assert named <= returned, named - returned
    levels = {o["matcher"]["options"]: o["properties"] for o in site_map["fieldConfig"]["overrides"]
              if o["matcher"]["options"].endswith(" level")}  # fmt: skip
    assert set(levels) == {f"{z.id} level" for z in planned}
    assert all({"id": "mappings", "value": LEVEL_MAPPINGS} in props for props in levels.values())
