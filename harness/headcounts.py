"""Staff who count: the headcounts grid officers report in replays, as the field would give them.

Every ``every_min`` minutes of the data's clock, each third-level zone above ``above`` of its capacity is
counted by its officer (else its first staff member, else the officer of a zone holding it). Nobody
counts thousands of people exactly: a count is the true occupancy give or take ``error`` (one standard
deviation, a share of it) -- an assumption, stated as one: a careful count of a lane section, scaled
to the lane, is taken to be within about 3 %.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from harness.realtraffic import Traffic
from lanewatch import contract
from lanewatch.site.model import Site


def counter_of(site: Site, zone_id: str) -> Optional[str]:
    """Who counts a zone: its officer, its first staff member, or the officer of a zone holding it."""
    for holder in sorted((z for z in site.zones if site.contains(z.id, zone_id)), key=lambda z: z.id != zone_id):
        if holder.officer:
            return holder.officer
        if holder.staff:
            return holder.staff[0]
    return None


def staff_headcounts(
    site: Site, traffic: Traffic, every_min: int = 120, above: float = 0.7, error: float = 0.03, seed: int = 1
) -> dict[int, list[contract.Headcount]]:
    """The headcounts reported at the end of each minute of the traffic (minute index -> headcounts)."""
    rng = np.random.default_rng(seed)
    out: dict[int, list[contract.Headcount]] = {}
    leaves = [z for z in site.zones if not site.children(z.id)]
    for minute in range(every_min - 1, traffic.minutes, every_min):
        for zone in leaves:
            truth = int(traffic.occupancy[zone.id][minute])
            person = counter_of(site, zone.id)
            if person is None or truth < above * zone.capacity:
                continue
            count = max(0, round(truth * (1 + rng.normal(0.0, error))))
            headcount = contract.Headcount(
                site=site.site.id, zone=zone.id, person=person, count=count, time=traffic.minute_end(minute)
            )
            out.setdefault(minute, []).append(headcount)
    return out
