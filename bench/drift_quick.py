"""The drift correction alone, in under a minute a week: the roll-up and level engine fed in process.

`bench/level_replay.py` judges the whole path (broker, aggregator, InfluxDB) and takes minutes a week.
This drives the same ``RollUp`` and ``LevelEngine`` directly, minute by minute, with the same traffic,
counter errors and headcounts, the same early warning and the same judgement, so that many weeks, error
models and seeds can be compared side by side in one run: the correction is judged on cases it was not
tuned on. It leaves out what only the full path has (batching, restarts, the forecast's curve rebuilt
from InfluxDB), so its levels and drift equal `level_replay.py`'s, and its early warning is close to it.

    .venv/bin/python bench/drift_quick.py [--week 2024-12-09 2024-11-25] [--warmup 7] [--days 7]
        [--counters camera | --rate 0.85 0.95 --false-rate 0.03 --hiding 0.12] [--error-seed 1 2 3]
        [--headcounts 120] [--uncorrected] [--no-views] [--scale-sd 0.1] [--prior 1.0] [--install-tally 200]
        [--oracle] [--json]

``--oracle`` adds a run whose factors are what each counter truly does, fixed from the start: the floor of
any correction of the flows. What it leaves is what no night can tell (the people a crowd hides, which
cancel out by closing; chance in who is counted; a half-blind lens's missing half): only anchors reach it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Optional

import numpy as np

from aggregator.config import DriftConfig, LevelsConfig
from aggregator.forecast import Forecaster
from aggregator.levels import LevelEngine
from aggregator.rollup import RollUp
from harness import headcounts, levelreplay, miscount, realtraffic
from harness.simulated import devices
from lanewatch import EXAMPLE_SITE, contract
from lanewatch.site import load_site
from lanewatch.site.model import Site


@dataclass(frozen=True)
class _Actions:
    divert_to: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Notice:
    """What the judgement reads of a level-change notice."""

    zone: str
    level: str
    previous_level: str
    time: datetime
    kind: str = "level_change"
    occupancy: Optional[int] = None
    actions: _Actions = field(default_factory=_Actions)


def run(
    site: Site,
    counted: realtraffic.Traffic,
    truth: realtraffic.Traffic,
    drift: DriftConfig,
    counts: dict[int, list[contract.Headcount]],
    warmup: int,
    known: Optional[dict[str, tuple[float, float]]] = None,
) -> tuple[levelreplay.Judgement, float]:
    """One replay in process, judged after ``warmup`` days; and how often the band held the truth. ``known``:
    each device's true factors (in, out), set sure and fixed instead of learned."""
    levels = LevelsConfig()
    if known is not None:
        drift = drift.model_copy(update={"night_sd": 0.0})  # no night may move them
    rollup, engine = RollUp(site, drift=drift, clock=lambda: 0.0), LevelEngine(site, levels)
    if known is not None:
        _know(rollup, known)
    forecast = Forecaster(site.site.timezone, levels.forecast_min)
    entrance = {d.id: d.entrance for d in site.devices}
    fleet = devices(site)
    occupancy = {z.id: np.zeros(counted.minutes) for z in site.zones}
    bands = {z.id: np.zeros(counted.minutes) for z in site.zones}
    notices: list[Any] = []
    for minute in range(counted.minutes):
        end = counted.minute_end(minute)
        for device in fleet:
            for window in realtraffic.minute_windows(counted, device, minute, end):
                rollup.apply(window, entrance[device.device])
        for headcount in counts.get(minute, []):
            rollup.anchor(headcount)
        rollup.take_points()
        for state in rollup.zones():
            occupancy[state.zone][minute], bands[state.zone][minute] = state.occupancy, state.band
            change = engine.update(state, 1.0, [], end)
            if change is not None:
                notices.append(_Notice(change.zone, change.level, change.previous, end))
            forecast.observe(state.zone, end, state.occupancy)
            level, rule, band = engine.level(state.zone), engine.rule(state.zone), engine.red_band(state)
            warning = forecast.warn(state.zone, level, state.capacity, rule, band)
            if warning is not None:
                notices.append(_Notice(state.zone, "red", engine.level(state.zone), end, kind="predicted_red"))
    judged = warmup * realtraffic.DAY
    return levelreplay.judge(site, truth, notices, levels, occupancy, judged_from=judged), held(
        site, truth, occupancy, bands, judged
    )


def _know(rollup: RollUp, known: dict[str, tuple[float, float]]) -> None:
    """Every line's factors set to ``known`` (per device: in, out), without doubt: with no night's drift
    (``night_sd`` 0) no night moves them."""
    factors = rollup.factors
    for (device, _line), i in factors.index.items():
        factors.x[i], factors.x[i + 1] = known[device]
        factors.prior[i], factors.prior[i + 1] = known[device]
        for j in range(len(factors.p)):
            factors.p[i][j] = factors.p[j][i] = factors.p[i + 1][j] = factors.p[j][i + 1] = 0.0


def held(
    site: Site, truth: realtraffic.Traffic, occupancy: dict[str, np.ndarray], bands: dict[str, np.ndarray], start: int
) -> float:
    """The share of busy zone-minutes (over 30 % of capacity) whose band held the true occupancy: about 68 %
    for an honest band of one standard deviation, far less for one that claims more than it knows."""
    hits = busy = 0
    for zone in site.zones:
        true = truth.occupancy[zone.id][start:]
        mask = true > 0.3 * zone.capacity
        hits += int((np.abs(occupancy[zone.id][start:] - true) <= bands[zone.id][start:])[mask].sum())
        busy += int(mask.sum())
    return hits / max(1, busy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--week", type=date.fromisoformat, nargs="+", default=[realtraffic.DEFAULT_WEEK])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=7, metavar="DAYS")
    parser.add_argument("--counters", choices=sorted(miscount.MODELS), default="camera")
    parser.add_argument("--error-seed", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument(
        "--rate",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="a counter model of your own: each device's counting rate per direction in LOW..HIGH ...",
    )
    parser.add_argument("--false-rate", type=float, default=0.02, help="... false counts per person crossing ...")
    parser.add_argument("--hiding", type=float, default=0.08, help="... and fewer counted by this share at a full zone")
    parser.add_argument("--headcounts", type=int, metavar="MINUTES")
    parser.add_argument("--uncorrected", action="store_true", help="also judge without the correction")
    parser.add_argument(
        "--no-views", action="store_true", help="correct without the cameras' views (drift.views: false)"
    )
    parser.add_argument(
        "--scale-sd", type=float, default=DriftConfig().scale_sd,
        help="drift.scale_sd: how far the counters' common scale may be off (0: the band from the nights alone)",
    )  # fmt: skip
    parser.add_argument(
        "--prior", type=float, default=DriftConfig().prior,
        help="drift.prior: what the factors are believed to be before any night (1 / the counters' measured rate)",
    )  # fmt: skip
    parser.add_argument(
        "--install-tally", type=int, default=0, metavar="PEOPLE",
        help="each line's rates measured at install against this many people counted by hand each way",
    )  # fmt: skip
    parser.add_argument(
        "--oracle", action="store_true",
        help="also run with every line's true factors, fixed: the floor of any correction of the flows",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    site = load_site(EXAMPLE_SITE)
    errors = miscount.MODELS[args.counters]
    if args.rate:
        name = f"rates {args.rate[0]:g}-{args.rate[1]:g}, {args.false_rate:g} false, {args.hiding:g} hiding"
        errors = replace(errors, name=name, rate=tuple(args.rate), false_rate=args.false_rate, hiding=args.hiding)
    results = []
    for week in args.week:
        source, total = week - timedelta(days=args.warmup), args.days + args.warmup
        traffic = realtraffic.week(site, source, days=total, end=realtraffic.aligned_end(site, source, total))
        for seed in args.error_seed:
            counted, given = miscount.miscount(site, traffic, errors, seed, args.warmup)
            measured = (
                miscount.install_tally(site, errors, given, args.install_tally, seed) if args.install_tally else site
            )
            counts = headcounts.staff_headcounts(site, traffic, args.headcounts, seed=seed) if args.headcounts else {}
            modes = ["uncorrected"] if args.uncorrected else []
            modes += ["corrected"] + (["oracle"] if args.oracle else [])
            for mode in modes:
                drift = DriftConfig(
                    enabled=mode != "uncorrected", views=not args.no_views, scale_sd=args.scale_sd, prior=args.prior
                )
                known = miscount.true_factors(errors, given) if mode == "oracle" else None
                verdict, band_held = run(measured, counted, traffic, drift, counts, args.warmup, known)
                result = {
                    "week": str(week), "seed": seed, "corrected": mode != "uncorrected", "mode": mode,
                    "minutes": verdict.minutes,
                    "wrong_level": round(verdict.wrong_level / verdict.minutes, 4),
                    "missed_red": len(verdict.missed_red), "false_red": verdict.false_red,
                    "worst_drift": round(verdict.worst_drift or 0.0, 3), "at": verdict.worst_drift_at,
                    "red_entries": verdict.warnings.reds, "warned": verdict.warnings.warned,
                    "warnings": verdict.warnings.warnings, "false_warnings": verdict.warnings.false,
                    "band_held": round(band_held, 3),
                }  # fmt: skip
                results.append(result)
                if not args.json:
                    print(f"{week} seed {seed} {mode:11s}  wrong {result['wrong_level']:6.2%}"
                          f"  missed red {result['missed_red']:>5}  false red {result['false_red']:>5}"
                          f"  worst drift {result['worst_drift']:6.1%} ({result['at']})"
                          f"  warned {result['warned']}/{result['red_entries']} reds,"
                          f" {result['false_warnings']}/{result['warnings']} false"
                          f"  band held the truth {band_held:.0%}", flush=True)  # fmt: skip
    if args.json:
        json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
