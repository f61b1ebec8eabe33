"""The aggregator's drain rate against a bare paho-mqtt subscriber's, for one and for two instances.

Each line is one run of ``lanewatch aggregator bench`` (both consumers measured side by side on the
same backlog, same broker, same machine); ratios are what to compare across machines.

    .venv/bin/python bench/aggregator_drain.py [--devices 400] [--windows 120] [--json]
"""

from __future__ import annotations

import json

from harness.sessions import backlog_arguments, run_bench


def main() -> None:
    args = backlog_arguments(__doc__)
    runs = [run_bench(args.devices, args.windows, instances) for instances in (1, 2)]
    if args.json:
        print(json.dumps(runs))
        return
    print(f"machine: {runs[0]['machine']}; backlog {runs[0]['messages']:,} messages from {args.devices} devices")
    print(f"{'instances':>9}  {'bare paho msg/s':>15}  {'aggregator msg/s':>16}  {'ratio':>5}")
    for run in runs:
        print(
            f"{run['instances']:>9}  {run['bare']['rate']:>15,}  {run['aggregator']['rate']:>16,}  {run['ratio']:>5.2f}"
        )


if __name__ == "__main__":
    main()
