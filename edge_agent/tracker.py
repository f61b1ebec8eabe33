"""ByteTrack-style multi-person tracking: a Kalman motion model, plus a second association pass that
also uses low-score detections, so a person whose score flickers or who is half hidden keeps their id.

Written here rather than taken from a library (the design follows Zhang et al., "ByteTrack", ECCV
2022): roboflow ``supervision`` and ``trackers`` need Python 3.10+ and pull matplotlib, PyAV and
SciPy onto the device, and ``norfair`` pins numpy < 2, which LiteRT's numpy 2 excludes; and on the
same detections, ``trackers``' ByteTrack and OC-SORT count people crossing lines markedly worse
(``bench/tracker_comparison.py``). The linear assignment itself comes from ``lap`` (Jonker-Volgenant),
the solver ByteTrack uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import lap
import numpy as np

# --- motion model -----------------------------------------------------------------------------------
# The constant-velocity Kalman filter of SORT/DeepSORT on (centre x, centre y, aspect w/h, height),
# with noise proportional to the box height. Its motion and measurement models never mix two
# dimensions and its noises are diagonal, so its covariance stays block-diagonal: four independent
# (position, velocity) filters per track. Each is kept as three numbers (position variance,
# position-velocity covariance, velocity variance) and all are updated at once, elementwise: the
# same estimates as the 8x8 matrix form, for a fraction of its numpy calls.

_DIM = 4
_BY_HEIGHT = np.array([1.0, 1.0, 0.0, 1.0])  # noise of x, y and height scales with the height; aspect's not
_STD_POSITION = 1.0 / 20
_STD_VELOCITY = 1.0 / 160
# (position, velocity) standard deviations of the aspect ratio, which are absolute
_ASPECT_INIT, _ASPECT_PROCESS, _ASPECT_MEASURE = (1e-2, 1e-5), (1e-2, 1e-5), 1e-1
_MOVING = 0.005  # heights a frame: slower than this, a track's direction of motion is not trusted


def _variances(std: float, aspect_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Noise variances of x, y, aspect, height as (per squared height, constant): ``std`` times the
    height, the aspect's absolute."""
    return np.square(std * _BY_HEIGHT), np.square(aspect_std * (1 - _BY_HEIGHT))


_INIT_POSITION = _variances(2 * _STD_POSITION, _ASPECT_INIT[0])
_INIT_VELOCITY = _variances(10 * _STD_VELOCITY, _ASPECT_INIT[1])
_PROCESS_POSITION = _variances(_STD_POSITION, _ASPECT_PROCESS[0])
_PROCESS_VELOCITY = _variances(_STD_VELOCITY, _ASPECT_PROCESS[1])
_MEASUREMENT = _variances(_STD_POSITION, _ASPECT_MEASURE)


def _noise(variances: tuple[np.ndarray, np.ndarray], squared_heights: np.ndarray) -> np.ndarray:
    """The (N, 4) variances of tracks with these squared heights."""
    return np.multiply.outer(squared_heights, variances[0]) + variances[1]


def _xyah(boxes: np.ndarray) -> np.ndarray:
    out = np.empty((len(boxes), _DIM))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    out[:, 0] = boxes[:, 0] + w / 2
    out[:, 1] = boxes[:, 1] + h / 2
    out[:, 2] = w / np.maximum(h, 1e-6)
    out[:, 3] = h
    return out


def _boxes(means: np.ndarray) -> np.ndarray:
    out = np.empty((len(means), 4))
    half_w, half_h = means[:, 2] * means[:, 3] / 2, means[:, 3] / 2
    out[:, 0] = means[:, 0] - half_w
    out[:, 1] = means[:, 1] - half_h
    out[:, 2] = means[:, 0] + half_w
    out[:, 3] = means[:, 1] + half_h
    return out


def kalman_init(measured: np.ndarray, velocities: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Means (N, 8) and covariances (N, 4, 3) of tracks starting where they were seen (x, y, aspect,
    height), at rest unless their ``velocities`` are known."""
    means = np.concatenate([measured, np.zeros_like(measured) if velocities is None else velocities], axis=1)
    squared = np.square(measured[:, 3])
    covariances = np.zeros((len(measured), _DIM, 3))
    covariances[..., 0] = _noise(_INIT_POSITION, squared)
    covariances[..., 2] = _noise(_INIT_VELOCITY, squared)
    return means, covariances


def kalman_predict(means: np.ndarray, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead: position += velocity; P = F P F' + Q for each (position, velocity) pair."""
    squared = np.square(means[:, 3])
    pp, pv, vv = covariances[..., 0], covariances[..., 1], covariances[..., 2]
    predicted = np.empty_like(covariances)
    predicted[..., 1] = pv + vv
    predicted[..., 2] = vv + _noise(_PROCESS_VELOCITY, squared)
    predicted[..., 0] = pp + pv + predicted[..., 1] + _noise(_PROCESS_POSITION, squared)
    moved = means.copy()
    moved[:, :_DIM] += means[:, _DIM:]
    return moved, predicted


def kalman_update(means: np.ndarray, covariances: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct the tracks with their matched boxes (as x, y, aspect, height): the Kalman gain of each
    (position, velocity) pair."""
    pp, pv, vv = covariances[..., 0], covariances[..., 1], covariances[..., 2]
    projected = pp + _noise(_MEASUREMENT, np.square(means[:, 3]))
    gain_p, gain_v = pp / projected, pv / projected
    innovation = measured - means[:, :_DIM]
    corrected = np.concatenate([means[:, :_DIM] + gain_p * innovation, means[:, _DIM:] + gain_v * innovation], axis=1)
    updated = np.empty_like(covariances)
    updated[..., 0] = pp * (1 - gain_p)
    updated[..., 1] = pv * (1 - gain_p)
    updated[..., 2] = vv - gain_v * pv
    return corrected, updated


# --- tracks -------------------------------------------------------------------------------------------


@dataclass
class Track:
    """One person over time: the motion model's state, and when it was last seen."""

    id: int
    mean: np.ndarray = field(repr=False)  # centre x, centre y, aspect, height, and their velocities
    covariance: np.ndarray = field(repr=False)  # per dimension: position and velocity (co)variances
    confirmed: bool = False  # seen at least twice
    last_frame: int = 0
    seen: np.ndarray = field(default_factory=lambda: np.zeros(_DIM), repr=False)  # the last box seen, as xyah
    # on the frame the track starts only: where the person was first seen (x1, y1, x2, y2), when their
    # detections were confident but not enough to start a track until later (a counting line should
    # start them on that side)
    origin: Optional[np.ndarray] = field(default=None, repr=False)


def smoothed_boxes(tracks: list[Track]) -> np.ndarray:
    """The motion model's estimate of each track's box (N, 4): steadier than any single detection."""
    return _boxes(np.array([t.mean for t in tracks]).reshape(-1, 2 * _DIM))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b`` (x1, y1, x2, y2)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _rows_cols(matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[np.ix_(rows, cols)]`` without ``np.ix_``'s checks, which cost more than the indexing."""
    return matrix[rows[:, None], cols]


def _nearness(predicted: np.ndarray, unmatched: list[Track], boxes: np.ndarray, reach: float) -> np.ndarray:
    """How well each detection fits each track, with no overlap needed: 1 at the predicted centre, 0
    at ``reach`` track heights from it; 0 too when their heights differ by more than a third, or when
    the detection lies behind where a moving track was last seen (a person does not walk back while
    hidden; the one walking the other way behind them is someone else)."""
    heights = np.maximum(predicted[:, 3] - predicted[:, 1], 1e-6)[:, None]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    offsets = (predicted[:, None, :2] + predicted[:, None, 2:]) / 2 - centres  # (tracks, detections, 2)
    near = 1 - np.hypot(offsets[..., 0], offsets[..., 1]) / (reach * heights)
    ratio = (boxes[:, 3] - boxes[:, 1])[None, :] / heights
    near[(ratio < 0.75) | (ratio > 1 / 0.75)] = 0
    seen = np.array([t.seen[:2] for t in unmatched])
    velocity = np.array([t.mean[_DIM : _DIM + 2] for t in unmatched])
    backwards = np.einsum("tdk,tk->td", centres[None] - seen[:, None], velocity) < 0
    moving = np.hypot(velocity[:, 0], velocity[:, 1]) > _MOVING * heights[:, 0]
    near[backwards & moving[:, None]] = 0
    return np.maximum(near, 0)


def _assign(overlap: np.ndarray, min_iou: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Optimal one-to-one matches of rows and columns overlapping at least ``min_iou``; then the
    unmatched rows and columns."""
    rows, cols = overlap.shape
    if not rows or not cols:
        return [], list(range(rows)), list(range(cols))
    candidates = overlap >= min_iou
    if candidates.sum(axis=0).max() <= 1 and candidates.sum(axis=1).max() <= 1:  # nothing to choose
        r, c = candidates.nonzero()
        taken_r, taken_c = set(r.tolist()), set(c.tolist())
        return (list(zip(r.tolist(), c.tolist())), [i for i in range(rows) if i not in taken_r],
                [j for j in range(cols) if j not in taken_c])  # fmt: skip
    _, row_to_col, col_to_row = lap.lapjv(1.0 - overlap, extend_cost=True, cost_limit=1.0 - min_iou)
    matches = [(r, int(c)) for r, c in enumerate(row_to_col) if c >= 0]
    return matches, [r for r in range(rows) if row_to_col[r] < 0], [c for c in range(cols) if col_to_row[c] < 0]


class ByteTracker:
    """Give person detections identities over time.

    ``high_score``: detections above it start and continue tracks; those between ``low_score`` and
    it only continue existing tracks (the ByteTrack idea). A track not seen for ``max_lost`` frames
    is dropped; a new one must be seen twice before it is confirmed. A track that finds no overlapping
    detection may take a confident one within ``refind`` of its heights of where it should be, in
    its direction of motion: in a crowd, people walking past each other hide each other, and the
    hidden one reappears off the predicted path; without this, they come back under a new id and
    the crossing they made while hidden is lost (``bench/counting_accuracy.py``, YOLOv8n: 73 % -> 92 %
    of the right-to-left crossings on the TUD clips). A track seen once takes a detection within half
    that reach: at 5 fps a walker has left their first box by the next frame (72 % -> 95 % of the
    left-to-right crossings at 5 fps). Confident detections below ``new_track_score`` start nothing,
    but a track that starts where a chain of them led (by overlap, frame to frame) keeps where the
    chain began as its ``origin``: someone half hidden beside another person crosses the line before
    their track starts (``bench/counting_unseen.py``: a crossing on PETS 2009 otherwise missed).
    """

    def __init__(
        self,
        high_score: float = 0.5,
        low_score: float = 0.1,
        new_track_score: float = 0.6,
        match_iou: float = 0.2,
        low_match_iou: float = 0.5,
        max_lost: int = 30,
        refind: float = 1.0,
    ) -> None:
        self.high_score, self.low_score, self.new_track_score = high_score, low_score, new_track_score
        self.match_iou, self.low_match_iou, self.max_lost = match_iou, low_match_iou, max_lost
        self.refind = refind
        self.tracks: list[Track] = []
        self.frame = 0
        self._next_id = 1
        # last frame's confident detections too weak to start a track: their boxes and origins
        self._weak: tuple[np.ndarray, np.ndarray] = (np.empty((0, 4)), np.empty((0, 4)))

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> list[Track]:
        """Feed one frame's detections; return the tracks seen in this frame.

        Tentative tracks (``confirmed`` False) are included: a counting line should know where a
        person was first seen, even if the track is confirmed only on the next frame.
        """
        self.frame += 1
        tracks = self.tracks
        for track in tracks:
            track.origin = None
        means, covariances = np.empty((0, 2 * _DIM)), np.empty((0, _DIM, 3))
        if tracks:
            means, covariances = kalman_predict(
                np.array([t.mean for t in tracks]), np.array([t.covariance for t in tracks])
            )
            for track, mean, covariance in zip(tracks, means, covariances):
                track.mean, track.covariance = mean, covariance
        predicted = _boxes(means)
        overlap = iou_matrix(predicted, boxes)  # every track against every detection, once
        matched: list[tuple[int, int]] = []  # (track index, detection index)

        # 1. confirmed tracks (seen or recently lost) against the confident detections
        high_idx = np.flatnonzero(scores >= self.high_score)
        low_idx = np.flatnonzero((scores >= self.low_score) & (scores < self.high_score))
        confirmed = np.array([i for i, t in enumerate(tracks) if t.confirmed], dtype=np.intp)
        pairs, unmatched, free_high = _assign(_rows_cols(overlap, confirmed, high_idx), self.match_iou)
        matched += [(int(confirmed[r]), int(high_idx[c])) for r, c in pairs]

        # 2. of those still unmatched, the ones seen last frame, against the weak detections
        recent = np.array(
            [confirmed[r] for r in unmatched if tracks[confirmed[r]].last_frame == self.frame - 1], np.intp
        )
        pairs, _, _ = _assign(_rows_cols(overlap, recent, low_idx), self.low_match_iou)
        matched += [(int(recent[r]), int(low_idx[c])) for r, c in pairs]

        # 3. confirmed tracks still unmatched against confident detections near where they should be:
        #    someone hidden behind another person for a while, who comes back off their predicted path
        claimed = {r for r, _ in matched}
        missing = np.array([confirmed[r] for r in unmatched if confirmed[r] not in claimed], np.intp)
        rest = high_idx[free_high]
        if self.refind and len(missing) and len(rest):
            found, _, free = self._match_near(missing, rest, predicted, boxes, self.refind)
            matched += found
            rest = rest[free]

        # 4. tentative tracks (seen once) against the confident detections left: by overlap, then by
        #    nearness within half the reach (at a low frame rate, someone walking leaves the box they
        #    were first seen in before the next frame); the unmatched ones end
        tentative = np.array([i for i, t in enumerate(tracks) if not t.confirmed], dtype=np.intp)
        pairs, dead, free_rest = _assign(_rows_cols(overlap, tentative, rest), self.match_iou)
        matched += [(int(tentative[r]), int(rest[c])) for r, c in pairs]
        if self.refind and dead and free_rest:
            found, still_dead, still_free = self._match_near(
                tentative[dead], rest[free_rest], predicted, boxes, self.refind / 2
            )
            matched += found
            dead, free_rest = [dead[r] for r in still_dead], [free_rest[c] for c in still_free]
        removed = {int(tentative[r]) for r in dead}

        if matched:
            rows, cols = (list(x) for x in zip(*matched))
            measured = _xyah(boxes[cols])
            means, covariances = kalman_update(means[rows], covariances[rows], measured)
            for i, (r, seen) in enumerate(zip(rows, measured)):
                track = tracks[r]
                gap = self.frame - track.last_frame
                if gap > 1:
                    # back after being unseen: the prediction ran on an old, often occlusion-skewed
                    # velocity; restart the filter here, moving as the person moved while hidden
                    # (OC-SORT's observation-centric re-update, simplified)
                    velocity = (seen - track.seen) / gap
                    velocity[2] = 0.0
                    restarted = kalman_init(seen[None], velocity[None])
                    means[i], covariances[i] = restarted[0][0], restarted[1][0]
                track.mean, track.covariance, track.seen = means[i], covariances[i], seen
                track.last_frame, track.confirmed = self.frame, True

        # 5. new tentative tracks from confident detections nobody claimed; forget long-lost tracks
        self.tracks = [
            t for i, t in enumerate(tracks) if i not in removed and self.frame - t.last_frame <= self.max_lost
        ]
        left = rest[free_rest]
        origins, linked = self._origins(boxes[left])
        strong = scores[left] >= self.new_track_score
        self._weak = (boxes[left[~strong]], origins[~strong])
        fresh = left[strong]
        if len(fresh):
            measured = _xyah(boxes[fresh])
            means, covariances = kalman_init(measured)
            for mean, covariance, seen, origin, known in zip(
                means, covariances, measured, origins[strong], linked[strong]
            ):
                self.tracks.append(
                    Track(self._next_id, mean, covariance, False, self.frame, seen, origin if known else None)
                )
                self._next_id += 1
        return [t for t in self.tracks if t.last_frame == self.frame]

    def _origins(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each unclaimed detection's person was first seen: a person half hidden in a group
        can be detected for frames with scores that continue but do not start a track, and, by the
        time a track starts, be past the line they crossed. Chains each detection by overlap to last
        frame's weak ones; returns the origins, and which detections had one before this frame."""
        weak, weak_origins = self._weak
        origins = boxes.copy()
        linked = np.zeros(len(boxes), bool)
        pairs, _, _ = _assign(iou_matrix(boxes, weak), self.match_iou)
        for r, c in pairs:
            origins[r], linked[r] = weak_origins[c], True
        return origins, linked

    def _match_near(
        self, rows: np.ndarray, cols: np.ndarray, predicted: np.ndarray, boxes: np.ndarray, reach: float
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Tracks ``rows`` against detections ``cols`` by nearness (``_nearness``): the (track,
        detection) pairs, then the positions in ``rows`` and in ``cols`` left unmatched."""
        near = _nearness(predicted[rows], [self.tracks[i] for i in rows], boxes[cols], reach)
        pairs, left_rows, left_cols = _assign(near, 1e-9)
        return [(int(rows[r]), int(cols[c])) for r, c in pairs], left_rows, left_cols
