"""The control room's Grafana boards, generated from the site inventory (Grafana 10/11, InfluxQL).

Four dashboards with stable uids, so provisioning and pushes update them in place:
- *Overview*: the site's plan (a Canvas panel from the inventory's ``plan``) with every zone coloured by
  its level and its people now, each entrance with the people in over 5 minutes; every zone's level as a
  colour, occupancy against capacity, the district total, recent level changes and early warnings,
  devices offline;
- *Zone*: one zone at a time (a variable listing the inventory's zones): in/out per entrance on its
  boundary, occupancy with its uncertainty band, the counted and the seen-in-view estimates it weighs and
  uncorrected beside it against capacity, density,
  the level timeline, level changes as annotations;
- *Devices*: online/offline, last seen, frame rate, inference time, temperature, outbox backlog,
  camera and sign state, the aggregator's own health, each counting line's learned factors (with the
  day's counts they came from, and why a counter was flagged) and occupancy corrected beside uncorrected;
- *Trends*: daily and weekly peaks per zone, the hourly mean, minutes spent yellow and red, the
  busiest entrances.

The zone variable's text is the zone id and its value the regex of the entrances on the zone's
boundary (from ``Site.boundary_entrances``): queries on zones use ``${zone:text}``, queries on
counts use ``${zone}``, so every board is right for every zone without hand edits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lanewatch.site.model import Site

DATASOURCE = {"type": "influxdb", "uid": "lanewatch-influxdb"}
SCHEMA_VERSION = 39  # Grafana 10.4; Grafana 11 migrates it on load
LEVEL_MAPPINGS = [
    {"type": "value", "options": {
        "-1": {"text": "unknown", "color": "#8e8e8e", "index": 0},
        "0": {"text": "green", "color": "green", "index": 1},
        "1": {"text": "yellow", "color": "yellow", "index": 2},
        "2": {"text": "red", "color": "red", "index": 3},
    }},
]  # fmt: skip
SHARE_THRESHOLDS = {"mode": "absolute", "steps": [
    {"color": "green", "value": None}, {"color": "yellow", "value": 0.8}, {"color": "red", "value": 1.0},
]}  # fmt: skip

Panel = dict[str, Any]


def target(query: str, ref: str = "A", alias: str = "", table: bool = False) -> dict[str, Any]:
    out = {"refId": ref, "datasource": DATASOURCE, "rawQuery": True, "query": query,
           "resultFormat": "table" if table else "time_series"}  # fmt: skip
    if alias:
        out["alias"] = alias
    return out


def panel(kind: str, title: str, targets: list[dict], x: int, y: int, w: int, h: int, **extra: Any) -> Panel:
    defaults: dict[str, Any] = extra.pop("defaults", {})
    overrides: list[dict[str, Any]] = extra.pop("overrides", [])
    return {
        "type": kind, "title": title, "datasource": DATASOURCE, "targets": targets,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": extra.pop("options", {}), **extra,
    }  # fmt: skip


#: Chinese first on every board the control room reads: each panel's title in Chinese before the English.
ZH_TITLES = {
    "Zone levels": "区域等级", "Occupancy against capacity": "人数占容量", "Devices offline": "离线设备",
    "Occupancy by zone": "各区域人数", "Level changes": "等级变化",
    "Early warnings (predicted red)": "预警（预计饱和）",
    "In / out per entrance on the boundary": "边界出入口进出人次", "Density": "密度", "Early warnings": "预警",
    "Online / offline": "在线 / 离线", "Last seen (latest heartbeat), camera and sign": "最近心跳、摄像头与显示屏",
    "Aggregator": "汇聚服务", "Counting factors, night by night": "逐夜计数系数",
    "Occupancy, corrected and uncorrected (all zones)": "人数：校正与未校正（全部区域）",
    "Hourly mean occupancy": "分时段平均人数", "Busiest entrances (people in)": "最繁忙出入口（进入人次）",
    "Level": "等级", "Frames per second": "帧率", "Inference time": "推理耗时", "CPU temperature": "处理器温度",
    "Outbox backlog (messages waiting on the device)": "设备待发消息", "Daily peak occupancy": "每日峰值人数",
    "Weekly peak occupancy": "每周峰值人数", "Minutes yellow": "黄色分钟数", "Minutes red": "红色分钟数",
    "Site map: levels, people now, people in over 5 minutes": "景区地图：等级、当前人数、5分钟进入人次",
}  # fmt: skip
ZH_BOARDS = {"Overview": "总览", "Zone": "区域", "Devices": "设备", "Trends": "趋势"}


def _names(site: Site) -> list[dict[str, Any]]:
    """Series named by a zone's or a gate's id are shown by their names, Chinese first."""
    named = [(z.id, z.name) for z in site.zones] + [(e.id, e.name) for e in site.entrances]
    return [{"matcher": {"id": "byName", "options": item}, "properties": [
        {"id": "displayName", "value": f"{name.zh} {name.en}"}]} for item, name in named]  # fmt: skip


def _zone_column(site: Site) -> dict[str, Any]:
    """A table's ``zone`` column shows the zone's Chinese name with its id."""
    options = {z.id: {"text": f"{z.name.zh} ({z.id})"} for z in site.zones}
    return {"matcher": {"id": "byName", "options": "zone"},
            "properties": [{"id": "mappings", "value": [{"type": "value", "options": options}]}]}  # fmt: skip


def dashboard(uid: str, title: str, panels: list[Panel], site: Site, **extra: Any) -> dict[str, Any]:
    names = _names(site)
    for n, p in enumerate(panels, start=1):
        p["id"] = n
        if p["title"] in ZH_TITLES:
            p["title"] = f"{ZH_TITLES[p['title']]} {p['title']}"
        overrides = p["fieldConfig"]["overrides"]
        overrides.extend(names if p["type"] != "table" else [_zone_column(site)])
    board = title.rsplit(" · ", 1)[-1]
    title = f"LaneWatch · {site.site.name.zh} {site.site.name.en} · {ZH_BOARDS.get(board, '')} {board}".replace(
        "  ", " "
    )
    return {
        "uid": uid, "title": title, "tags": ["lanewatch", site.site.id], "timezone": site.site.timezone,
        "schemaVersion": SCHEMA_VERSION, "editable": False, "graphTooltip": 1, "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"}, "panels": panels,
        "templating": {"list": extra.pop("variables", [])},
        "annotations": {"list": extra.pop("annotations", [])},
        "links": [{"title": "LaneWatch", "type": "dashboards", "tags": ["lanewatch"], "asDropdown": True}],
        **extra,
    }  # fmt: skip


#: The map's canvas, in Grafana's percentages of the panel.
PLAN_TEXT = {"fixed": "#111111"}


def site_map(site: Site, y: int) -> Panel:
    """The site's plan (a Canvas panel): each zone's boxes coloured by its level, its name and people now;
    each entrance a dot with the people who came in over the last 5 minutes. From the inventory's ``plan``."""
    s = site.site.id
    zones = [z for z in site.zones if z.plan]
    gates = [e for e in site.entrances if e.plan is not None]
    elements: list[dict[str, Any]] = []
    for zone in zones:
        for n, box in enumerate(zone.plan):
            elements.append(_element(
                "rectangle", f"{zone.id} {n}", box.x, box.y, box.w, box.h,
                text={"fixed": f"{zone.name.zh} {zone.name.en}" if n == 0 else ""},
                background={"color": {"field": _level_field(zone.id), "fixed": "#8e8e8e"}},
            ))  # fmt: skip
        first = zone.plan[0]
        elements.append(_element(
            "metric-value", f"{zone.id} people", first.x + first.w * 0.72, first.y, first.w * 0.28, first.h,
            text={"field": _people_field(zone.id), "fixed": "", "mode": "field"},
            background={"color": {"fixed": "transparent"}},
        ))  # fmt: skip
    for gate in gates:
        assert gate.plan is not None
        x, y_ = gate.plan
        elements.append(_element(
            "ellipse", gate.id, x - 0.012, y_ - 0.02, 0.024, 0.04,
            text={"field": _flow_field(gate.id), "fixed": "", "mode": "field"},
            background={"color": {"fixed": "#1f60c4"}},
        ))  # fmt: skip
    root = {"type": "frame", "name": "plan", "elements": elements,
            "background": {"color": {"fixed": "#f4f1ea"},
                           **({"image": {"fixed": site.site.plan_image, "mode": "fixed"}, "size": "contain"}
                              if site.site.plan_image else {})},
            "border": {"color": {"fixed": "transparent"}},
            "constraint": {"horizontal": "left", "vertical": "top"},
            "placement": {"left": 0, "top": 0, "width": 100, "height": 100}}  # fmt: skip
    level = {z.id: {"matcher": {"id": "byName", "options": _level_field(z.id)},
                    "properties": [{"id": "mappings", "value": LEVEL_MAPPINGS}, {"id": "color", "value": {
                        "mode": "thresholds"}}]} for z in zones}  # fmt: skip
    return panel(
        "canvas", "Site map: levels, people now, people in over 5 minutes", [
            target(f"SELECT last(\"rank\") FROM \"levels\" WHERE \"site\" = '{s}' GROUP BY \"zone\"",
                   "A", alias="$tag_zone level"),
            target(f"SELECT last(\"occupancy\") FROM \"zones\" WHERE \"site\" = '{s}' AND $timeFilter "
                   "GROUP BY \"zone\"", "B", alias="$tag_zone people"),
            target(f"SELECT sum(\"in\") FROM \"counts\" WHERE \"site\" = '{s}' AND $timeFilter "
                   "GROUP BY time(5m), \"entrance\" fill(0)", "C", alias="$tag_entrance in"),
        ],
        0, y, 24, 12, options={"inlineEditing": False, "showAdvancedTypes": True, "root": root},
        defaults={"unit": "none", "thresholds": {"mode": "absolute", "steps": [{"color": "#8e8e8e", "value": None}]}},
        overrides=list(level.values()),
    )  # fmt: skip


def _level_field(zone: str) -> str:
    return f"{zone} level"


def _people_field(zone: str) -> str:
    return f"{zone} people"


def _flow_field(entrance: str) -> str:
    return f"{entrance} in"


def _element(
    kind: str, name: str, x: float, y: float, w: float, h: float, *, text: dict[str, Any], background: dict[str, Any]
) -> dict[str, Any]:
    """A canvas element placed in percentages of the panel, so that the plan scales with it."""
    return {
        "type": kind, "name": name,
        "config": {"text": {"mode": "fixed", **text}, "color": PLAN_TEXT, "align": "center", "valign": "middle",
                   "size": 12},
        "background": background, "border": {"color": {"fixed": "#333333"}, "width": 1},
        "constraint": {"horizontal": "scale", "vertical": "scale"},
        "placement": {"left": round(100 * x, 2), "top": round(100 * y, 2), "width": round(100 * w, 2),
                      "height": round(100 * h, 2)},
    }  # fmt: skip


def overview(site: Site) -> dict[str, Any]:
    s = site.site.id
    root = site.root.id
    top = 12 if any(z.plan for z in site.zones) else 0  # the map first: what the big screen shows
    panels = [site_map(site, 0)] if top else []
    panels += [
        panel("stat", "Zone levels", [target(
            f"SELECT last(\"rank\") FROM \"levels\" WHERE \"site\" = '{s}' GROUP BY \"zone\"", alias="$tag_zone")],
            0, top, 24, 4, defaults={"mappings": LEVEL_MAPPINGS, "color": {"mode": "thresholds"},
                                   "thresholds": {"mode": "absolute", "steps": [{"color": "#8e8e8e", "value": None}]}},
            options={"colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        panel("bargauge", "Occupancy against capacity", [target(
            f"SELECT last(\"share\") FROM \"zones\" WHERE \"site\" = '{s}' AND $timeFilter GROUP BY \"zone\"",
            alias="$tag_zone")],
            0, top + 4, 12, 9, defaults={"unit": "percentunit", "min": 0, "max": 1.2, "thresholds": SHARE_THRESHOLDS},
            options={"orientation": "horizontal", "displayMode": "basic",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        panel("stat", f"景区总人数 District total ({site.root.name.zh} {site.root.name.en})", [target(
            f"SELECT last(\"occupancy\") AS \"occupancy\", last(\"capacity\") AS \"capacity\" FROM \"zones\" "
            f"WHERE \"site\" = '{s}' AND \"zone\" = '{root}' AND $timeFilter")],
            12, top + 4, 6, 4, defaults={"unit": "none"},
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        panel("stat", "Devices offline", [target(
            "SELECT sum(\"offline\") FROM (SELECT 1 - last(\"online\") AS \"offline\" FROM \"availability\" "
            f"WHERE \"site\" = '{s}' GROUP BY \"device\")")],
            18, top + 4, 6, 4, defaults={"unit": "none", "noValue": "0", "thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "red", "value": 1}]}},
            options={"colorMode": "background",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}),
        panel("timeseries", "Occupancy by zone", [target(
            f"SELECT last(\"occupancy\") FROM \"zones\" WHERE \"site\" = '{s}' AND $timeFilter "
            "GROUP BY time($__interval), \"zone\" fill(previous)", alias="$tag_zone")],
            12, top + 8, 12, 5, defaults={"unit": "none"}),
        panel("table", "Level changes", [target(
            "SELECT \"zone\", \"previous\", \"level\", \"reason\" FROM \"levels\" "
            f"WHERE \"site\" = '{s}' AND $timeFilter ORDER BY time DESC LIMIT 50", table=True)],
            0, top + 13, 12, 9),
        panel("table", "Early warnings (predicted red)", [target(
            "SELECT \"zone\", \"predicted\", \"capacity\", \"reason\" FROM \"warnings\" "
            f"WHERE \"site\" = '{s}' AND $timeFilter ORDER BY time DESC LIMIT 50", table=True)],
            12, top + 13, 12, 9),
    ]  # fmt: skip
    return dashboard("lanewatch-overview", f"LaneWatch · {site.site.name.en} · Overview", panels, site)


def _zone_variable(site: Site) -> dict[str, Any]:
    options: list[dict[str, Any]] = []
    for zone in site.zones:
        entrances = "|".join(e.id for e, _sign in site.boundary_entrances(zone.id)) or "none"
        options.append({"text": zone.id, "value": entrances, "selected": not options})
    first = options[0]
    return {
        "name": "zone", "label": "Zone", "type": "custom", "hide": 0,
        "query": ",".join(f"{o['text']} : {o['value']}" for o in options),
        "current": {"text": first["text"], "value": first["value"]}, "options": options,
    }  # fmt: skip


def zone_board(site: Site) -> dict[str, Any]:
    s = site.site.id
    where = f"\"site\" = '{s}' AND \"zone\" = '${{zone:text}}'"
    panels = [
        panel("timeseries", "In / out per entrance on the boundary", [target(
            f"SELECT sum(\"in\") AS \"in\", sum(\"out\") AS \"out\" FROM \"counts\" WHERE \"site\" = '{s}' "
            "AND \"entrance\" =~ /^(${zone})$/ AND $timeFilter GROUP BY time($__interval), \"entrance\" fill(0)",
            alias="$tag_entrance $col")],
            0, 0, 24, 8, defaults={"unit": "none", "custom": {"drawStyle": "bars", "fillOpacity": 60}}),
        panel("timeseries", "人数（± 误差带）、计数推算、画面所见、未校正人数、容量 Occupancy (± its band: how far "
              "off the estimate may be), counted alone, seen in the cameras' views, uncorrected, capacity", [target(
            f"SELECT last(\"occupancy\") AS \"occupancy\", last(\"occupancy\") + last(\"band\") AS \"upper\", "
            f"last(\"occupancy\") - last(\"band\") AS \"lower\", last(\"flow\") AS \"counted\", "
            f"last(\"view\") AS \"in view\", last(\"uncorrected\") AS \"uncorrected\", "
            f"last(\"capacity\") AS \"capacity\" FROM \"zones\" "
            f"WHERE {where} AND $timeFilter GROUP BY time($__interval) fill(previous)")],
            0, 8, 12, 8, defaults={"unit": "none"}),
        panel("timeseries", "Density", [target(
            f"SELECT last(\"density\") FROM \"zones\" WHERE {where} AND $timeFilter "
            "GROUP BY time($__interval) fill(previous)", alias="persons/m²")],
            12, 8, 12, 8, defaults={"unit": "none", "decimals": 2}),
        panel("state-timeline", "Level", [target(
            f"SELECT last(\"rank\") FROM \"levels\" WHERE {where} AND $timeFilter "
            "GROUP BY time($__interval) fill(previous)", alias="level")],
            0, 16, 24, 4, defaults={"mappings": LEVEL_MAPPINGS, "color": {"mode": "thresholds"}}),
        panel("table", "Early warnings", [target(
            f"SELECT \"predicted\", \"capacity\", \"reason\" FROM \"warnings\" WHERE {where} AND $timeFilter "
            "ORDER BY time DESC LIMIT 20", table=True)],
            0, 20, 24, 6),
    ]  # fmt: skip
    annotations = [
        {"name": "Level changes", "enable": True, "iconColor": "orange", "datasource": DATASOURCE,
         "query": f"SELECT \"level\", \"reason\" FROM \"levels\" WHERE {where} AND $timeFilter",
         "textColumn": "reason", "tagsColumn": "level"},
        {"name": "Predicted red", "enable": True, "iconColor": "purple", "datasource": DATASOURCE,
         "query": f"SELECT \"reason\" FROM \"warnings\" WHERE {where} AND $timeFilter", "textColumn": "reason"},
    ]  # fmt: skip
    return dashboard("lanewatch-zone", f"LaneWatch · {site.site.name.en} · Zone", panels, site,
                     variables=[_zone_variable(site)], annotations=annotations)  # fmt: skip


def devices_board(site: Site) -> dict[str, Any]:
    s = site.site.id

    def health(title: str, field: str, unit: str, x: int, y: int) -> Panel:
        return panel("timeseries", title, [target(
            f"SELECT mean(\"{field}\") FROM \"heartbeat\" WHERE \"site\" = '{s}' AND $timeFilter "
            "GROUP BY time($__interval), \"device\" fill(none)", alias="$tag_device")],
            x, y, 12, 7, defaults={"unit": unit})  # fmt: skip

    panels = [
        panel("table", "Online / offline", [target(
            f"SELECT last(\"state\") AS \"state\" FROM \"availability\" WHERE \"site\" = '{s}' GROUP BY \"device\"",
            table=True)], 0, 0, 8, 9),
        panel("table", "Last seen (latest heartbeat), camera and sign", [target(
            "SELECT last(\"uptime_s\") AS \"uptime_s\", last(\"camera\") AS \"camera\", last(\"sign\") AS \"sign\" "
            f"FROM \"heartbeat\" WHERE \"site\" = '{s}' GROUP BY \"device\"", table=True)], 8, 0, 16, 9),
        health("Frames per second", "fps", "none", 0, 9),
        health("Inference time", "inference_ms", "ms", 12, 9),
        health("CPU temperature", "cpu_temp_c", "celsius", 0, 16),
        health("Outbox backlog (messages waiting on the device)", "outbox_depth", "none", 12, 16),
        panel("timeseries", "Aggregator", [target(
            "SELECT last(\"processed\") AS \"processed\", last(\"stored\") AS \"stored\", last(\"rejected\") AS "
            f"\"rejected\", last(\"lag_s\") AS \"lag_s\" FROM \"aggregator\" WHERE \"site\" = '{s}' AND $timeFilter "
            "GROUP BY time($__interval), \"instance\" fill(none)", alias="$tag_instance $col")], 0, 23, 24, 7),
        panel("table", "计数系数（最近一夜）Counting factors (latest night): people per count in and out; from: "
              "where they started (one over the rates measured at install, else 1); flagged: check the counter", [
            target("SELECT last(\"f_in\") AS \"in\", last(\"f_out\") AS \"out\", last(\"sd_in\") AS \"± in\", "
                   "last(\"prior\") AS \"from\", "
                   "last(\"day_in\") AS \"counted in\", last(\"day_out\") AS \"counted out\", last(\"flagged\") AS "
                   f"\"flagged\", last(\"why\") AS \"why\" FROM \"counting_factors\" WHERE \"site\" = '{s}' "
                   "GROUP BY \"device\", \"line\"", table=True)], 0, 30, 24, 9),
        panel("timeseries", "Counting factors, night by night", [target(
            f"SELECT last(\"f_in\") AS \"in\", last(\"f_out\") AS \"out\" FROM \"counting_factors\" WHERE \"site\" = "
            f"'{s}' AND $timeFilter GROUP BY time(1d), \"device\" fill(none)", alias="$tag_device $col")],
            0, 39, 12, 8, defaults={"unit": "none", "decimals": 3}),
        panel("timeseries", "Occupancy, corrected and uncorrected (all zones)", [target(
            f"SELECT last(\"occupancy\") AS \"corrected\", last(\"uncorrected\") AS \"uncorrected\" FROM \"zones\" "
            f"WHERE \"site\" = '{s}' AND $timeFilter GROUP BY time($__interval), \"zone\" fill(previous)",
            alias="$tag_zone $col")], 12, 39, 12, 8, defaults={"unit": "none"}),
    ]  # fmt: skip
    return dashboard("lanewatch-devices", f"LaneWatch · {site.site.name.en} · Devices", panels, site)


def trends_board(site: Site) -> dict[str, Any]:
    s = site.site.id
    tz = site.site.timezone

    def peaks(title: str, bucket: str, y: int) -> Panel:
        return panel("timeseries", title, [target(
            f"SELECT max(\"occupancy\") FROM \"zones\" WHERE \"site\" = '{s}' AND $timeFilter "
            f"GROUP BY time({bucket}), \"zone\" fill(none) tz('{tz}')", alias="$tag_zone")],
            0, y, 12, 8, defaults={"unit": "none", "custom": {"drawStyle": "bars", "fillOpacity": 50}})  # fmt: skip

    def minutes_at(title: str, rank: int, x: int) -> Panel:
        return panel("bargauge", title, [target(
            f"SELECT count(\"rank\") FROM (SELECT last(\"rank\") AS \"rank\" FROM \"levels\" WHERE \"site\" = '{s}' "
            "AND $timeFilter GROUP BY time(1m), \"zone\" fill(previous)) "
            f"WHERE \"rank\" = {rank} GROUP BY \"zone\"", alias="$tag_zone")],
            x, 16, 12, 8, defaults={"unit": "m"}, options={"orientation": "horizontal",
            "reduceOptions": {"calcs": ["sum"], "fields": "", "values": False}})  # fmt: skip

    panels = [
        peaks("Daily peak occupancy", "1d", 0),
        peaks("Weekly peak occupancy", "7d", 8),
        panel("timeseries", "Hourly mean occupancy", [target(
            f"SELECT mean(\"occupancy\") FROM \"zones\" WHERE \"site\" = '{s}' AND $timeFilter "
            f"GROUP BY time(1h), \"zone\" fill(none) tz('{tz}')", alias="$tag_zone")],
            12, 0, 12, 8, defaults={"unit": "none"}),
        panel("bargauge", "Busiest entrances (people in)", [target(
            f"SELECT sum(\"in\") FROM \"counts\" WHERE \"site\" = '{s}' AND $timeFilter GROUP BY \"entrance\"",
            alias="$tag_entrance")], 12, 8, 12, 8, defaults={"unit": "none"},
            options={"orientation": "horizontal", "reduceOptions": {"calcs": ["sum"], "fields": "", "values": False}}),
        minutes_at("Minutes yellow", 1, 0),
        minutes_at("Minutes red", 2, 12),
    ]  # fmt: skip
    board = dashboard("lanewatch-trends", f"LaneWatch · {site.site.name.en} · Trends", panels, site)
    board.update(time={"from": "now-30d", "to": "now"}, refresh="")
    return board


def build(site: Site) -> dict[str, dict[str, Any]]:
    """Every dashboard by file name."""
    return {
        "overview.json": overview(site),
        "zone.json": zone_board(site),
        "devices.json": devices_board(site),
        "trends.json": trends_board(site),
    }


def write(site: Site, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in build(site).items():
        path = folder / name
        path.write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


DATASOURCE_YAML = """\
# Grafana provisioning: the LaneWatch InfluxDB datasource (InfluxQL). Mount this folder's parent as
# /etc/grafana/provisioning. Point url and dbName at the aggregator's InfluxDB; with authentication,
# set INFLUXDB_USER / INFLUXDB_PASSWORD in Grafana's environment (never in this file).
apiVersion: 1
datasources:
  - name: LaneWatch InfluxDB
    uid: {uid}
    type: influxdb
    access: proxy
    url: {url}
    user: $INFLUXDB_USER
    jsonData:
      dbName: {database}
      httpMode: POST
    secureJsonData:
      password: $INFLUXDB_PASSWORD
"""

PROVIDER_YAML = """\
# Grafana provisioning: load the LaneWatch dashboards from files, into the folder "LaneWatch".
# Mount the dashboards' JSON folder at the path below (read-only is fine).
apiVersion: 1
providers:
  - name: lanewatch
    folder: LaneWatch
    folderUid: lanewatch
    type: file
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: /var/lib/grafana/dashboards/lanewatch
"""


def write_provisioning(folder: Path, url: str = "http://127.0.0.1:8086", database: str = "lanewatch") -> list[Path]:
    """Grafana's file provisioning: the datasource (the aggregator's InfluxDB) and the dashboard provider."""
    files = {
        folder / "datasources" / "lanewatch.yaml": DATASOURCE_YAML.format(
            uid=DATASOURCE["uid"], url=url, database=database
        ),
        folder / "dashboards" / "lanewatch.yaml": PROVIDER_YAML,
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)
