"""Daily, weekly and monthly reports for the control room: Markdown, CSV and PNG charts from InfluxDB.

A period is a local calendar day, an ISO week (Monday to Sunday) or a calendar month at the site.
Everything comes from what the aggregator stored (InfluxQL, so InfluxDB 1.x, 2.x and 3.x):
- peak occupancy per zone and when, against capacity;
- time spent yellow and red per zone (from the level changes, carried over from before the period);
- the busiest entrances (people in and out);
- the hourly profile: mean occupancy by hour of the local day, and people entering the district;
- device availability: the share of 5-minute slots with a heartbeat, and offline events;
- notices sent: level changes by level, and early warnings.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from aggregator import points
from aggregator.influx import Database, rows
from lanewatch.site.model import Site

PERIODS = ("day", "week", "month")
#: What ``collect`` queries, in order (a progress bar's steps).
STEPS = ("peak occupancy", "occupancy over the period", "time in each level", "early warnings", "entrances",
         "hourly profile", "device availability")  # fmt: skip
LEVELS = ("green", "yellow", "red", "unknown")


def period_bounds(period: str, day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The period containing ``day``, as aware local datetimes [start, end)."""
    if period == "day":
        first, last = day, day + timedelta(days=1)
    elif period == "week":
        first = day - timedelta(days=day.weekday())
        last = first + timedelta(days=7)
    elif period == "month":
        first = day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    return datetime.combine(first, datetime.min.time(), tz), datetime.combine(last, datetime.min.time(), tz)


@dataclass
class Report:
    site: Site
    period: str
    start: datetime  # local
    end: datetime
    peaks: dict[str, tuple[int, datetime]] = field(default_factory=dict)  # zone -> (occupancy, when)
    level_hours: dict[str, dict[str, float]] = field(default_factory=dict)  # zone -> level -> hours
    entrances: dict[str, tuple[int, int]] = field(default_factory=dict)  # entrance -> (in, out)
    hourly: dict[str, list[float]] = field(default_factory=dict)  # zone -> 24 mean occupancies
    entering: list[int] = field(default_factory=list)  # people entering the district, by local hour
    occupancy: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)  # zone -> 15-min maxima
    availability: dict[str, float] = field(default_factory=dict)  # device -> share of 5-min slots heard
    offline_events: dict[str, int] = field(default_factory=dict)
    bands: dict[str, int] = field(default_factory=dict)  # zone -> widest uncertainty band (people)
    factors: dict[str, tuple[float, float]] = field(default_factory=dict)  # device -> latest (in, out) factors
    flagged: dict[str, tuple[int, str]] = field(default_factory=dict)  # device -> (nights flagged, latest why)
    changes: dict[str, dict[str, int]] = field(default_factory=dict)  # zone -> level -> changes into it
    warnings: dict[str, int] = field(default_factory=dict)  # zone -> predicted-red notices


def _when(ns: int) -> datetime:
    return points.EPOCH + timedelta(microseconds=ns // 1000)


def collect(site: Site, db: Database, period: str, day: date, step: Callable[[str], None] = lambda _s: None) -> Report:
    """Query everything the report needs; ``step`` is told what is being queried (for a progress bar)."""
    tz = ZoneInfo(site.site.timezone)
    start, end = period_bounds(period, day, tz)
    report = Report(site, period, start, end)
    steps = iter(STEPS)
    s = site.site.id
    span = f"time >= {points.ns(start)} AND time < {points.ns(end)}"
    where = f"\"site\" = '{s}' AND {span}"

    step(next(steps))
    for series in db.query(f'SELECT max("occupancy") FROM "zones" WHERE {where} GROUP BY "zone"'):
        for row in rows(series):
            report.peaks[series["tags"]["zone"]] = (int(row["max"]), _when(row["time"]).astimezone(tz))
    for series in db.query(f'SELECT max("band") FROM "zones" WHERE {where} GROUP BY "zone"'):
        for row in rows(series):
            report.bands[series["tags"]["zone"]] = int(row["max"] or 0)
    step(next(steps))
    bucket = "15m" if period != "month" else "1h"
    for series in db.query(
        f'SELECT max("occupancy") FROM "zones" WHERE {where} GROUP BY time({bucket}), "zone" fill(none)'
    ):
        report.occupancy[series["tags"]["zone"]] = [(_when(r["time"]).astimezone(tz), r["max"]) for r in rows(series)]

    step(next(steps))
    before: dict[str, str] = {}
    for series in db.query(
        f'SELECT last("level") FROM "levels" WHERE "site" = \'{s}\' AND time < {points.ns(start)} GROUP BY "zone"'
    ):
        for row in rows(series):
            before[series["tags"]["zone"]] = row["last"]
    changes: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for series in db.query(f'SELECT "level" FROM "levels" WHERE {where} GROUP BY "zone"'):
        for row in rows(series):
            changes[series["tags"]["zone"]].append((_when(row["time"]), row["level"]))
    now = datetime.now(timezone.utc)
    for zone in site.zones:
        hours = dict.fromkeys(LEVELS, 0.0)
        counted = dict.fromkeys(LEVELS, 0)
        level, since = before.get(zone.id), start.astimezone(timezone.utc)
        for when, new in sorted(changes.get(zone.id, [])):
            if level is not None:
                hours[level] += (when - since).total_seconds() / 3600
            level, since = new, when
            counted[new] += 1
        if level is not None:
            hours[level] += (min(end.astimezone(timezone.utc), now) - since).total_seconds() / 3600
        report.level_hours[zone.id] = hours
        report.changes[zone.id] = counted
    step(next(steps))
    for series in db.query(f'SELECT count("predicted") FROM "warnings" WHERE {where} GROUP BY "zone"'):
        for row in rows(series):
            report.warnings[series["tags"]["zone"]] = int(row["count"])

    step(next(steps))
    for series in db.query(f'SELECT sum("in"), sum("out") FROM "counts" WHERE {where} GROUP BY "entrance"'):
        for row in rows(series):
            report.entrances[series["tags"]["entrance"]] = (int(row["sum"]), int(row["sum_1"]))

    step(next(steps))
    sums: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(24)])
    for series in db.query(f'SELECT mean("occupancy") FROM "zones" WHERE {where} GROUP BY time(1h), "zone" fill(none)'):
        for row in rows(series):
            sums[series["tags"]["zone"]][_when(row["time"]).astimezone(tz).hour].append(row["mean"])
    report.hourly = {z: [sum(v) / len(v) if v else 0.0 for v in hours] for z, hours in sums.items()}
    gates = "|".join(e.id for e, sign in site.boundary_entrances(site.root.id) if sign > 0)
    entering = [0] * 24
    # A window belongs to the hour it counted in: one ending at 07:00 sharp is 06:59's (offset 1 ns).
    query = f'SELECT sum("in") FROM "counts" WHERE {where} AND "entrance" =~ /^({gates})$/ '
    query += "GROUP BY time(1h, 1ns) fill(none)"
    for series in db.query(query):
        for row in rows(series):
            entering[_when(row["time"]).astimezone(tz).hour] += int(row["sum"])
    report.entering = entering

    step(next(steps))
    heard = [
        (series["tags"]["device"], [_when(r["time"]) for r in rows(series)])
        for series in db.query(
            f'SELECT count("uptime_s") FROM "heartbeat" WHERE {where} GROUP BY time(5m), "device" fill(none)'
        )
    ]
    # Over the time that has passed, from the first heartbeat of any device in the period: a day still
    # going, or a site that started counting during it, is not a fleet that was offline.
    first = min((slots[0] for _device, slots in heard if slots), default=start)
    elapsed = min(end, now.astimezone(tz)) - max(start, first.astimezone(tz))
    slots_passed = max(1, int(elapsed.total_seconds() // 300) + 1)
    for device, slots in heard:
        report.availability[device] = min(1.0, len(slots) / slots_passed)
    for series in db.query(
        f'SELECT count("state") FROM "availability" WHERE {where} AND "online" = 0 GROUP BY "device"'
    ):
        for row in rows(series):
            report.offline_events[series["tags"]["device"]] = int(row["count"])
    for series in db.query(
        f'SELECT last("f_in") AS "f_in", last("f_out") AS "f_out" FROM "counting_factors" WHERE {where} '
        'GROUP BY "device"'
    ):
        for row in rows(series):
            report.factors[series["tags"]["device"]] = (float(row["f_in"]), float(row["f_out"]))
    for series in db.query(
        f'SELECT "why" FROM "counting_factors" WHERE {where} AND "flagged" = true GROUP BY "device"'
    ):
        found = rows(series)
        report.flagged[series["tags"]["device"]] = (len({row["time"] for row in found}), str(found[-1]["why"]))
    return report


# --- writing ----------------------------------------------------------------------------------------


def write(report: Report, folder: Path) -> list[Path]:
    """The Markdown report, its CSV tables and PNG charts, in ``folder``; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{report.site.site.id}-{report.period}-{report.start:%Y-%m-%d}"
    written = [*_csvs(report, folder, stem), *_charts(report, folder, stem)]
    markdown = folder / f"{stem}.md"
    markdown.write_text(_markdown(report, [p.name for p in written]), encoding="utf-8")
    return [markdown, *written]


def _table(path: Path, header: list[str], body: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(body)
    return path


def _csvs(report: Report, folder: Path, stem: str) -> list[Path]:
    site = report.site
    zones = [
        [z.id, z.name.en, z.capacity, *(_peak(report, z.id)),
         *(round(report.level_hours.get(z.id, {}).get(level, 0.0), 2) for level in ("yellow", "red", "unknown")),
         *(report.changes.get(z.id, {}).get(level, 0) for level in ("yellow", "red")), report.warnings.get(z.id, 0)]
        for z in site.zones
    ]  # fmt: skip
    entrances = [[e, i, o] for e, (i, o) in sorted(report.entrances.items(), key=lambda kv: -kv[1][0])]
    hourly = [[h, report.entering[h], *(round(report.hourly.get(z.id, [0.0] * 24)[h], 1) for z in site.zones)]
              for h in range(24)]  # fmt: skip
    devices = [[d.id, d.entrance, round(report.availability.get(d.id, 0.0), 4), report.offline_events.get(d.id, 0),
                *([round(f, 4) for f in report.factors[d.id]] if d.id in report.factors else ["", ""]),
                report.flagged.get(d.id, (0, ""))[0]] for d in site.devices]  # fmt: skip
    return [
        _table(folder / f"{stem}-zones.csv", ["zone", "name", "capacity", "peak", "peak_share", "peak_time",
               "hours_yellow", "hours_red", "hours_unknown", "to_yellow", "to_red", "predicted_red"], zones),
        _table(folder / f"{stem}-entrances.csv", ["entrance", "in", "out"], entrances),
        _table(folder / f"{stem}-hourly.csv", ["hour", "entering", *(z.id for z in site.zones)], hourly),
        _table(folder / f"{stem}-devices.csv", ["device", "entrance", "availability", "offline_events", "factor_in",
               "factor_out", "nights_flagged"], devices),
    ]  # fmt: skip


def _peak(report: Report, zone_id: str) -> list[Any]:
    capacity = report.site.zone(zone_id).capacity
    if zone_id not in report.peaks:
        return ["", "", ""]
    value, when = report.peaks[zone_id]
    return [value, round(value / capacity, 3), when.strftime("%Y-%m-%d %H:%M")]


#: The CJK fonts the charts look for (``scripts/setup`` installs Debian's fonts-wqy-microhei);
#: matplotlib falls back from DejaVu Sans to them glyph by glyph.
CJK_FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)


def _chart_fonts() -> list[str]:
    """DejaVu Sans, then every CJK font installed (made known to matplotlib even when its font cache was
    built before they were installed)."""
    from matplotlib import font_manager

    known = {Path(f.fname) for f in font_manager.fontManager.ttflist}
    families = []
    for path in map(Path, CJK_FONT_FILES):
        if path.is_file():
            if path not in known:
                font_manager.fontManager.addfont(str(path))
            families.append(font_manager.FontProperties(fname=str(path)).get_name())
    return ["DejaVu Sans", *families]


def _charts(report: Report, folder: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.family"] = _chart_fonts()
    site = report.site
    leaves = [z for z in site.zones if not site.children(z.id)]
    out = []

    def name(text: Any) -> str:
        return f"{text.zh} {text.en}"

    fig, ax = plt.subplots(figsize=(11, 4.5))
    for zone in leaves:
        series = report.occupancy.get(zone.id, [])
        if series:
            times: Any = [t for t, _v in series]  # matplotlib plots datetimes on a date axis
            ax.plot(times, [v / zone.capacity for _t, v in series], label=name(zone.name), lw=1.2)
    ax.axhline(0.8, color="#d4a000", ls="--", lw=1, label="黄色 yellow (80 %)")
    ax.axhline(1.0, color="#c00000", ls="--", lw=1, label="红色 red (100 %)")
    ax.set_ylabel("人数 / 容量  occupancy / capacity")
    ax.set_title(f"三级网格人数  Occupancy of the third-level grids, {_label(report)}")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    out.append(_save(fig, folder / f"{stem}-occupancy.png"))

    fig, ax = plt.subplots(figsize=(11, 4.5))
    hours = list(range(24))
    ax.bar(hours, report.entering, color="#4a7ab7", label="进入景区人数 people entering the district")
    ax.set_xlabel("时段（当地时间） hour of the day (local time)")
    ax.set_ylabel("每小时进入人数 people entering per hour")
    twin = ax.twinx()
    for zone in leaves:
        twin.plot(hours, report.hourly.get(zone.id, [0.0] * 24), lw=1.2, label=name(zone.name))
    twin.set_ylabel("平均人数 mean occupancy")
    ax.set_title(f"分时段客流  Hourly profile, {_label(report)}")
    twin.legend(fontsize=7, ncol=3, loc="upper left")
    out.append(_save(fig, folder / f"{stem}-hourly.png"))

    fig, ax = plt.subplots(figsize=(11, 4.5))
    zones = [z.id for z in site.zones]
    labels = [f"{z.name.zh}\n{z.id}" for z in site.zones]
    bottom = [0.0] * len(zones)
    for level, colour, word in (("yellow", "#e0b000", "黄色 yellow"), ("red", "#c00000", "红色 red"),
                                ("unknown", "#8e8e8e", "无数据 unknown")):  # fmt: skip
        values = [report.level_hours.get(z, {}).get(level, 0.0) for z in zones]
        ax.bar(labels, values, bottom=bottom, color=colour, label=word)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("小时 hours")
    ax.set_title(f"各区域黄色、红色与无数据时长  Hours yellow, red and unknown per zone, {_label(report)}")
    ax.legend()
    ax.tick_params(axis="x", labelsize=8)
    out.append(_save(fig, folder / f"{stem}-levels.png"))

    fig, ax = plt.subplots(figsize=(11, 5))
    gates = {e.id: e.name for e in site.entrances}
    busiest = sorted(report.entrances.items(), key=lambda kv: sum(kv[1]))
    rows = [name(gates[e]) if e in gates else e for e, _v in busiest]
    places = list(range(len(busiest)))
    ax.barh([p + 0.2 for p in places], [v[0] for _e, v in busiest], height=0.4, color="#4a7ab7", label="进 in")
    ax.barh([p - 0.2 for p in places], [v[1] for _e, v in busiest], height=0.4, color="#9bb8dd", label="出 out")
    ax.set_yticks(places, rows, fontsize=8)
    ax.set_xlabel("人次 people")
    ax.set_title(f"各出入口进出人次  Entrances, in and out, {_label(report)}")
    ax.legend()
    out.append(_save(fig, folder / f"{stem}-entrances.png"))
    if any(z.plan for z in site.zones):
        out.append(_plan_chart(report, folder / f"{stem}-map.png", plt))
    return out


#: The worst level a zone reached in the period, as the map colours it.
WORST = (("red", "#c00000", "到过红色 reached red"), ("yellow", "#e0b000", "到过黄色 reached yellow"),
         ("green", "#3a9a3a", "一直绿色 green throughout"))  # fmt: skip


def _plan_chart(report: Report, path: Path, plt: Any) -> Path:
    """The site's plan (the inventory's ``plan``): each zone coloured by the worst level it reached, with its
    peak; each gate a dot sized by the people who came in through it."""
    from matplotlib.patches import Patch, Rectangle

    site = report.site
    fig, ax = plt.subplots(figsize=(11, 7))
    for zone in (z for z in site.zones if z.plan):
        hours = report.level_hours.get(zone.id, {})
        worst = next((w for w in WORST[:2] if hours.get(w[0], 0) > 0), WORST[2])
        for box in zone.plan:
            ax.add_patch(Rectangle((box.x, box.y), box.w, box.h, facecolor=worst[1], edgecolor="#333333", lw=0.8,
                                   alpha=0.85))  # fmt: skip
        first = zone.plan[0]
        peak = report.peaks.get(zone.id)
        said = f"{zone.name.zh} {zone.name.en}" + (f"\n峰值 peak {peak[0]:,} / {zone.capacity:,}" if peak else "")
        vertical = first.h > first.w
        ax.text(first.x + first.w / 2, first.y + first.h / 2, said, ha="center", va="center", fontsize=7.5,
                rotation=90 if vertical else 0, color="white")  # fmt: skip
    flows = {e: v[0] for e, v in report.entrances.items()}
    most = max(flows.values(), default=0) or 1
    for gate in (e for e in site.entrances if e.plan is not None):
        assert gate.plan is not None
        x, y = gate.plan
        people = flows.get(gate.id, 0)
        ax.scatter([x], [y], s=30 + 400 * people / most, color="#1f60c4", edgecolor="white", zorder=3)
        ax.annotate(f"{gate.name.zh} {people:,}", (x, y), textcoords="offset points", xytext=(0, -14), ha="center",
                    fontsize=6.5, color="#1f3f7f", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # y down, as the plan
    ax.set_aspect(0.62)
    ax.axis("off")
    ax.legend(handles=[Patch(color=c, label=word) for _l, c, word in WORST], loc="lower left", fontsize=8)
    ax.set_title(f"景区地图：各区域最高等级与峰值，各出入口进入人次  The site's plan: worst level and peak per zone, "
                 f"people in per gate, {_label(report)}", fontsize=10)  # fmt: skip
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _label(report: Report) -> str:
    last = report.end - timedelta(days=1)
    if report.period == "day":
        return f"{report.start:%a %d %b %Y}"
    return f"{report.start:%d %b} – {last:%d %b %Y}"


def _markdown(report: Report, files: list[str]) -> str:
    site = report.site
    stem = files[0].rsplit("-", 1)[0]
    lines = [
        f"# {site.site.name.zh} {site.site.name.en}: {report.period} report, {_label(report)}",
        "",
        f"Local time ({site.site.timezone}). From the aggregator's data in InfluxDB; "
        f"tables in CSV beside this file ({', '.join(f for f in files if f.endswith('.csv'))}).",
        "",
        "## Peaks and levels per zone",
        "",
        "Widest ±: how far off the zone's occupancy estimate was at most (one standard deviation), by the traffic "
        "across its boundary since its last anchor (closing time, a staff headcount).",
        "",
        "| zone | capacity | peak | share | when | widest ± | hours yellow | hours red | hours unknown | to yellow | to red | predicted red |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for zone in site.zones:
        peak = _peak(report, zone.id)
        hours = report.level_hours.get(zone.id, {})
        count = report.changes.get(zone.id, {})
        share = f"{peak[1]:.0%}" if peak[1] != "" else ""
        people = f"{peak[0]:,}" if peak[0] != "" else ""
        lines.append(
            f"| {zone.name.zh} {zone.name.en} | {zone.capacity:,} | {people} | {share} | {peak[2]} | "
            f"{report.bands.get(zone.id, 0):,} | "
            f"{hours.get('yellow', 0):.1f} | {hours.get('red', 0):.1f} | {hours.get('unknown', 0):.1f} | "
            f"{count.get('yellow', 0)} | {count.get('red', 0)} | {report.warnings.get(zone.id, 0)} |"
        )
    lines += ["", f"![occupancy]({stem}-occupancy.png)", "", f"![levels]({stem}-levels.png)", ""]
    if any(z.plan for z in site.zones):
        lines += [f"![map]({stem}-map.png)", ""]
    lines += ["## Busiest entrances", "", "| entrance | in | out |", "|---|---|---|"]
    for entrance, (people_in, people_out) in sorted(report.entrances.items(), key=lambda kv: -kv[1][0])[:10]:
        lines.append(f"| {entrance} | {people_in:,} | {people_out:,} |")
    lines += ["", f"![entrances]({stem}-entrances.png)", "", "## Hourly profile", ""]
    busiest_hour = max(range(24), key=lambda h: report.entering[h])
    lines += [
        f"{sum(report.entering):,} people entered the district; the busiest hour was "
        f"{busiest_hour:02d}:00-{busiest_hour + 1:02d}:00 ({report.entering[busiest_hour]:,} in that hour, all days).",
        "",
        f"![hourly]({stem}-hourly.png)",
        "",
        "## Devices",
        "",
        "Factors: people per count in and out, learned every night from the zones being empty at closing "
        "(1.00 is an exact counter). A flagged counter is one for the technicians to check.",
        "",
        "| device | entrance | availability | offline events | factor in | factor out | nights flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for device in site.devices:
        factors = report.factors.get(device.id)
        shown = f"{factors[0]:.2f} | {factors[1]:.2f}" if factors else " | "
        nights, why = report.flagged.get(device.id, (0, ""))
        lines.append(
            f"| {device.id} | {device.entrance} | {report.availability.get(device.id, 0.0):.1%} | "
            f"{report.offline_events.get(device.id, 0)} | {shown} | {nights}{f' ({why})' if why else ''} |"
        )
    notices = sum(sum(c.values()) for c in report.changes.values())
    lines += ["", "## Notices", "",
              f"{notices} level changes announced, {sum(report.warnings.values())} early warnings (`predicted red`).",
              ""]  # fmt: skip
    return "\n".join(lines)
