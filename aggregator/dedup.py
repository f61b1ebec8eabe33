"""Which count windows were already taken: at-least-once delivery brings some twice."""

from __future__ import annotations

from collections import OrderedDict


class Dedup:
    """(device, boot id, seq) already taken in this run: per device, its latest boots, each a low-water mark
    plus the seqs above it.

    Bounded whatever a device sends: one that keeps inventing boot ids or skipping seqs only makes this
    forget its own oldest ones. The worst that can do is take an old window again, which changes no total
    (a window's point is keyed by its time; the roll-up follows totals, not windows).
    """

    BOOTS = 8  # per device
    ABOVE = 10_000  # seqs held above the low-water mark, per boot

    def __init__(self) -> None:
        self._seen: dict[str, OrderedDict[str, tuple[int, set[int]]]] = {}

    def seen(self, device: str, boot_id: str, seq: int) -> bool:
        boots = self._seen.setdefault(device, OrderedDict())
        if boot_id in boots:
            boots.move_to_end(boot_id)
        else:
            boots[boot_id] = (-1, set())
            if len(boots) > self.BOOTS:
                boots.popitem(last=False)
        mark, above = boots[boot_id]
        if seq <= mark or seq in above:
            return True
        above.add(seq)
        while mark + 1 in above:  # seqs are consecutive per boot: the set stays small
            mark += 1
            above.discard(mark)
        if len(above) > self.ABOVE:  # a device skipping seqs: forget the lower half of what it skipped
            cut = sorted(above)[len(above) // 2]
            mark, above = cut, {s for s in above if s > cut}
        boots[boot_id] = (mark, above)
        return False
