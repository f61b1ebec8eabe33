"""Counting lines and the tracker on scripted motion: direction, once per crossing, no jitter counts."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.counting import CountingLine, RegionOfInterest, in_view, reference_points
from edge_agent.pipeline import count_crossings
from edge_agent.tracker import ByteTracker, smoothed_boxes


def person_at(x: float, foot_y: float, height: float = 160.0) -> np.ndarray:
    """A person's box (x1, y1, x2, y2) whose feet are at (x, foot_y)."""
    return np.array([[x - height / 5, foot_y - height, x + height / 5, foot_y]])


def walk(line: CountingLine, points: list[tuple[float, float]], track: int = 1) -> list[str]:
    events = []
    for frame, (x, y) in enumerate(points):
        events += [c.direction for c in line.update([track], person_at(x, y), frame)]
    return events


def test_a_line_drawn_top_to_bottom_counts_left_to_right_as_in() -> None:
    line = CountingLine("gate", (320, 0), (320, 480))
    assert walk(line, [(x, 400) for x in range(200, 460, 10)]) == ["in"]
    assert walk(line, [(x, 400) for x in range(460, 200, -10)], track=2) == ["out"]
    assert line.totals == {"in": 1, "out": 1}


def test_a_line_drawn_left_to_right_counts_bottom_to_top_as_in() -> None:
    line = CountingLine("gate", (0, 240), (640, 240))
    assert walk(line, [(300, y) for y in range(400, 100, -10)]) == ["in"]
    reversed_line = CountingLine("gate", (640, 240), (0, 240))
    assert walk(reversed_line, [(300, y) for y in range(400, 100, -10)]) == ["out"]


def test_each_crossing_counts_once_and_coming_back_counts_out() -> None:
    line = CountingLine("gate", (320, 0), (320, 480))
    path = [(x, 400) for x in range(200, 460, 5)] + [(x, 400) for x in range(460, 200, -5)]
    path += [(x, 400) for x in range(200, 460, 5)]
    assert walk(line, path) == ["in", "out", "in"]


def test_a_box_jittering_on_the_line_counts_nothing() -> None:
    rng = np.random.default_rng(3)
    jitter = [(320 + float(rng.uniform(-3, 3)), 400) for _ in range(500)]
    assert walk(CountingLine("gate", (320, 0), (320, 480)), jitter) == []
    naive = CountingLine("gate", (320, 0), (320, 480), band=0.0, band_fraction=0.0)
    assert len(walk(naive, jitter)) > 100  # what the band is for


def test_the_reference_point_is_the_feet_or_the_box_centre() -> None:
    box = person_at(100, 400)
    assert reference_points(box, "foot").tolist() == [[100.0, 400.0]]
    assert reference_points(box, "center").tolist() == [[100.0, 320.0]]
    # walking down past a horizontal line at y=350: the feet cross it, the centre never does
    feet = CountingLine("gate", (0, 350), (640, 350), anchor="foot")
    centre = CountingLine("gate", (0, 350), (640, 350), anchor="center")
    for frame, y in enumerate(range(300, 420, 10)):
        feet.update([1], person_at(100, y), frame)
        centre.update([1], person_at(100, y), frame)
    assert feet.totals == {"in": 0, "out": 1}
    assert centre.totals == {"in": 0, "out": 0}


def test_passing_beyond_the_end_of_a_short_line_is_not_a_crossing() -> None:
    half = CountingLine("west-half", (0, 240), (320, 240))
    assert walk(half, [(500, y) for y in range(400, 100, -10)]) == []
    assert walk(half, [(150, y) for y in range(400, 100, -10)], track=2) == ["in"]


def test_region_of_interest_counts_the_people_inside() -> None:
    roi = RegionOfInterest([(0, 0), (320, 0), (320, 480), (0, 480)])
    people = np.concatenate([person_at(100, 400), person_at(500, 400), person_at(300, 200)])
    feet = reference_points(people, "foot")
    assert roi.contains(feet).tolist() == [True, False, True]
    assert in_view(people, "foot", roi) == 2
    assert in_view(people, "foot", None) == 3
    with pytest.raises(ValueError, match="at least 3 points"):
        RegionOfInterest([(0, 0), (1, 1)])


def test_forgotten_tracks_release_their_state() -> None:
    line = CountingLine("gate", (320, 0), (320, 480))
    walk(line, [(100, 400)], track=7)
    line.forget([])
    assert walk(line, [(500, 400)], track=7) == []  # no memory of the old side: no crossing


# --- tracker -----------------------------------------------------------------------------------------


def _boxes(*people: tuple[float, float]) -> np.ndarray:
    return np.concatenate([person_at(x, y) for x, y in people]) if people else np.zeros((0, 4))


def test_the_tracker_keeps_identities_through_missing_and_weak_detections() -> None:
    tracker = ByteTracker()
    ids_seen = set()
    b_x = 500.0
    for frame in range(60):
        a = (100 + 6 * frame, 400)
        if not 20 <= frame < 40:  # B walks left, but stops for 20 frames half hidden (weak scores)
            b_x -= 6
        boxes, scores = _boxes(a, (b_x, 300)), np.array([0.9, 0.9])
        if 10 <= frame < 14:  # A is missed entirely for 4 frames (occluded)
            boxes, scores = boxes[1:], scores[1:]
        elif 20 <= frame < 40:
            scores = np.array([0.9, 0.2])
        ids_seen.update(t.id for t in tracker.update(boxes, scores) if t.confirmed)
    # Without the second pass over weak detections, B's motion model would walk on without them and
    # B would come back under a new id.
    assert ids_seen == {1, 2}


def test_someone_hidden_while_crossing_comes_back_under_their_id_and_is_counted() -> None:
    """A walks slowly while in view, speeds up behind someone for 10 frames and reappears 60 px
    ahead of the predicted path (no overlap with the prediction). B, who appears meanwhile behind
    A's last position walking the other way, is someone else."""
    tracker, line = ByteTracker(), CountingLine("gate", (170, 0), (170, 480))
    a_path = [100 + 2 * f for f in range(10)] + [120 + 8 * (f - 9) for f in range(10, 40)]
    ids, counted = set(), []
    for frame, a_x in enumerate(a_path):
        people = [] if 10 <= frame < 20 else [(a_x, 400)]
        if frame >= 17:
            people.append((60 - 4 * (frame - 17), 400))  # B
        tracks = tracker.update(_boxes(*people), np.full(len(people), 0.9))
        a = [t for t in tracks if abs(smoothed_boxes([t])[0, 0] + 32 - a_x) < 40]
        ids.update(t.id for t in a)
        counted += [c.direction for c in line.update([t.id for t in a], smoothed_boxes(a), frame)]
    assert ids == {1}
    assert counted == ["in"]
    b = [t for t in tracker.tracks if t.id != 1]
    assert len(b) == 1
    assert b[0].confirmed


def test_at_a_low_frame_rate_someone_walking_out_of_their_first_box_keeps_their_id() -> None:
    """At 5 fps a walker moves more than their own width between frames: no overlap at all between
    the box they were first seen in and the next one."""
    tracker, line = ByteTracker(), CountingLine("gate", (400, 0), (400, 480))
    ids, counted = set(), []
    for frame, x in enumerate(range(100, 700, 70)):
        tracks = tracker.update(_boxes((x, 400)), np.array([0.9]))
        ids.update(t.id for t in tracks)
        counted += [c.direction for c in line.update([t.id for t in tracks], smoothed_boxes(tracks), frame)]
    assert ids == {1}
    assert counted == ["in"]


def test_someone_half_hidden_while_crossing_counts_from_where_they_were_first_seen() -> None:
    """Walking beside someone, a person is detected with scores that continue a track but do not
    start one (0.5 - 0.6) until they are past the line; their track starts there, yet they crossed."""
    tracker, line = ByteTracker(), CountingLine("gate", (170, 0), (170, 480))
    counted, ids = [], set()
    for frame, x in enumerate(range(100, 320, 10)):
        tracks = tracker.update(_boxes((x, 400)), np.array([0.55 if x < 200 else 0.9]))
        ids.update(t.id for t in tracks)
        counted += [c.direction for c in count_crossings([line], tracks, smoothed_boxes(tracks), frame)]
    assert ids == {1}
    assert counted == ["in"]


def test_a_new_track_needs_two_sightings_and_a_lone_false_positive_dies() -> None:
    tracker = ByteTracker()
    first = tracker.update(_boxes((100, 400)), np.array([0.9]))
    assert [t.confirmed for t in first] == [False]
    second = tracker.update(_boxes((104, 400)), np.array([0.9]))
    assert [t.confirmed for t in second] == [True]

    lonely = ByteTracker()
    lonely.update(_boxes((300, 300)), np.array([0.9]))
    lonely.update(_boxes(), np.zeros(0))
    assert lonely.tracks == []


def test_weak_detections_alone_start_nothing() -> None:
    tracker = ByteTracker()
    for _ in range(5):
        assert tracker.update(_boxes((200, 400)), np.array([0.3])) == []
