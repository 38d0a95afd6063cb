"""SORT-style tracker on hand-made box sequences."""

from __future__ import annotations

import numpy as np
import pytest

from pedsearch.config import TrackingConfig
from pedsearch.errors import InvalidInput
from workers.detectors import Detections
from workers.tracking import ID_STRIDE, KalmanBoxFilter, Tracker


def dets(*boxes: tuple[float, float, float, float], score: float = 0.9) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), score))


def walker(seq: int, x0: float = 100, dx: float = 5, y: float = 50) -> tuple[float, ...]:
    """A 40x100 box moving ``dx`` pixels right per frame."""
    return (x0 + dx * seq, y, 40, 100)


def run(tracker: Tracker, frames: dict[int, Detections]) -> dict[int, list[int]]:
    """Feed frames in seq order; returns seq -> ids of the returned tracks."""
    return {seq: [t.track_id for t in tracker.update(d, seq, seq / 10)]
            for seq, d in sorted(frames.items())}


def test_kalman_filter_follows_constant_velocity():
    kf = KalmanBoxFilter(np.array([0, 0, 40, 100], np.float32))
    for i in range(1, 20):
        kf.predict()
        kf.update(np.array([3 * i, 0, 40, 100], np.float32))
    kf.predict()
    np.testing.assert_allclose(kf.box(), [60, 0, 40, 100], atol=0.5)
    assert kf.mean[4] == pytest.approx(3, abs=0.1)  # learnt velocity of the centre


def test_confirmed_after_min_hits_with_id_from_birth_frame():
    tracker = Tracker(iou_threshold=0.3, max_age_frames=5, min_hits=2, id_origin=0)
    out = run(tracker, {1: dets(walker(1)), 2: dets(walker(2)), 3: dets(walker(3))})
    assert out == {1: [], 2: [1 * ID_STRIDE], 3: [1 * ID_STRIDE]}
    track = tracker.update(dets(walker(4)), 4, 0.4)[0]
    assert (track.start_seq, track.start_ts, track.hits, track.frame_seq) == (1, 0.1, 4, 4)
    np.testing.assert_allclose(track.box, walker(4))
    np.testing.assert_allclose(track.smoothed_box, walker(4), atol=2)


def test_id_kept_across_a_gap_up_to_max_age_and_new_after_it():
    frames = {s: dets(walker(s)) for s in range(1, 6)}
    kept = {**frames, **{s: dets() for s in range(6, 11)}, 11: dets(walker(11))}
    tracker = Tracker(max_age_frames=5, min_hits=2, id_origin=0)
    out = run(tracker, kept)  # frames 6..10 missed: 5 frames, not more than max_age
    assert out[11] == [1000]
    assert tracker.ended_ids == ()

    lost = {**frames, **{s: dets() for s in range(6, 12)}, 12: dets(walker(12)),
            13: dets(walker(13))}
    tracker = Tracker(max_age_frames=5, min_hits=2, id_origin=0)
    ended_at = {}
    for seq, d in sorted(lost.items()):
        tracker.update(d, seq, seq / 10)
        if tracker.ended_ids:
            ended_at[seq] = tracker.ended_ids
    assert ended_at == {11: (1000,)}  # 6 frames missed > max_age 5
    assert [t.track_id for t in tracker.update(dets(walker(14)), 14, 1.4)] == [12 * ID_STRIDE]


def test_a_gap_in_frame_seq_counts_as_missed_frames():
    tracker = Tracker(max_age_frames=3, min_hits=1, id_origin=0)
    assert run(tracker, {1: dets(walker(1)), 2: dets(walker(2))}) == {1: [1000], 2: [1000]}
    # frames 3..5 never arrive (3 missed, = max_age): the prediction carries the box along
    assert run(tracker, {6: dets(walker(6))}) == {6: [1000]}
    assert run(tracker, {11: dets(walker(11))}) == {11: [11000]}
    assert tracker.ended_ids == (1000,)


def test_tentative_track_dies_at_its_first_miss():
    tracker = Tracker(min_hits=2, id_origin=0)
    out = run(tracker, {1: dets(walker(1)), 2: dets(), 3: dets(walker(3)), 4: dets(walker(4))})
    assert out == {1: [], 2: [], 3: [], 4: [3000]}
    assert tracker.ended_ids == ()  # never confirmed, so never announced


def test_ids_follow_boxes_not_detection_order():
    def a(s: int) -> tuple[float, ...]:
        return walker(s, x0=100, dx=5)

    def b(s: int) -> tuple[float, ...]:
        return walker(s, x0=400, dx=-5)

    tracker = Tracker(min_hits=1, id_origin=0)
    first = tracker.update(dets(a(1), b(1)), 1, 0.1)
    assert [(t.track_id, t.det_index) for t in first] == [(1000, 0), (1001, 1)]
    swapped = tracker.update(dets(b(2), a(2)), 2, 0.2)
    assert [(t.track_id, t.det_index) for t in swapped] == [(1000, 1), (1001, 0)]


def test_low_iou_does_not_match():
    tracker = Tracker(iou_threshold=0.5, min_hits=1, id_origin=0)
    tracker.update(dets((0, 0, 40, 100)), 1, 0.0)
    # 20 px jump: IoU with the (static) prediction = 20*100 / (2*4000 - 2000) = 1/3 < 0.5
    assert [t.track_id for t in tracker.update(dets((20, 0, 40, 100)), 2, 0.1)] == [2000]


def _random_walk_frames(seed: int) -> dict[int, Detections]:
    rng = np.random.default_rng(seed)
    starts = rng.uniform(0, 800, (6, 2))
    velocity = rng.uniform(-6, 6, (6, 2))
    frames = {}
    for seq in range(1, 60):
        boxes = []
        for i in range(6):
            if rng.random() < 0.15:  # missed detections
                continue
            x, y = starts[i] + velocity[i] * seq + rng.normal(0, 1.5, 2)
            boxes.append((x, y, 40 + i * 5, 100 + i * 10))
        order = rng.permutation(len(boxes))
        frames[seq] = dets(*[boxes[j] for j in order])
    return frames


def test_track_ids_are_deterministic_for_the_same_input():
    frames = _random_walk_frames(7)
    first = run(Tracker(), frames)
    again = run(Tracker(), frames)
    tracker = Tracker()
    run(tracker, _random_walk_frames(8))
    tracker.reset()
    after_reset = run(tracker, frames)
    assert first == again == after_reset
    assert len({i for ids in first.values() for i in ids}) >= 6


def test_ids_of_a_restarted_tracker_never_reuse_earlier_ids():
    frames = _random_walk_frames(3)
    full = run(Tracker(), frames)
    restarted = run(Tracker(), {s: d for s, d in frames.items() if s >= 30})
    earlier = {i for s, ids in full.items() if s < 30 for i in ids}
    later = {i for ids in restarted.values() for i in ids}
    assert earlier and later and not earlier & later


def test_frames_must_arrive_in_order_and_config_is_checked():
    tracker = Tracker.from_config(TrackingConfig(iou_threshold=0.4, max_age_frames=3, min_hits=1),
                                  id_origin=0)
    assert (tracker.iou_threshold, tracker.max_age_frames, tracker.min_hits) == (0.4, 3, 1)
    tracker.update(dets(walker(5)), 5, 0.5)
    with pytest.raises(InvalidInput, match="not after the previous frame 5"):
        tracker.update(dets(walker(5)), 5, 0.5)
    with pytest.raises(InvalidInput, match="iou_threshold"):
        Tracker(iou_threshold=1.5)
    assert tracker.active_ids() == [5000] and tracker.last_seq == 5


def test_a_restored_tracker_continues_exactly_like_the_uninterrupted_one():
    import pickle

    frames = _random_walk_frames(11)
    uninterrupted = run(Tracker(), frames)
    tracker = Tracker()
    first = run(tracker, {s: d for s, d in frames.items() if s < 25})
    restored = pickle.loads(pickle.dumps(tracker))  # the consumer checkpoints it this way
    rest = run(restored, {s: d for s, d in frames.items() if s >= 25})
    assert {**first, **rest} == uninterrupted


def _jump_frames() -> dict[int, Detections]:
    """A walker whose box jumps 30 px sideways in frame 5 (IoU with the prediction ~0.14)."""
    frames = {s: dets(walker(s)) for s in range(1, 5)}
    x, y, w, h = walker(5)
    frames[5] = dets((x + 30, y, w, h))
    frames[6] = dets((x + 35, y, w, h))
    return frames


def test_without_motion_gate_a_jump_splits_the_track():
    tracker = Tracker(iou_threshold=0.3, max_age_frames=5, min_hits=2, center_gate=0.0, id_origin=0)
    out = run(tracker, _jump_frames())
    assert out[4] == [1 * ID_STRIDE]
    assert out[5] == []  # the jumped box starts a tentative track
    assert out[6] == [5 * ID_STRIDE]


def test_motion_gate_keeps_the_track_through_a_jump():
    tracker = Tracker(iou_threshold=0.3, max_age_frames=5, min_hits=2, center_gate=0.5, id_origin=0)
    out = run(tracker, _jump_frames())
    assert out[4] == out[5] == out[6] == [1 * ID_STRIDE]


def test_motion_gate_rejects_far_boxes_and_other_sizes():
    far = {s: dets(walker(s)) for s in range(1, 5)}
    x, y, w, h = walker(5)
    far[5] = dets((x + 80, y, w, h))  # centre 0.8 box heights away: beyond a 0.5 gate
    tracker = Tracker(iou_threshold=0.3, max_age_frames=5, min_hits=2, center_gate=0.5)
    assert run(tracker, far)[5] == []
    small = {s: dets(walker(s)) for s in range(1, 5)}
    small[5] = dets((x + 30, y + 30, w / 2, h / 2))  # half the height: another object
    tracker = Tracker(iou_threshold=0.3, max_age_frames=5, min_hits=2, center_gate=0.5)
    assert run(tracker, small)[5] == []


def test_motion_gate_prefers_the_nearest_of_two_candidates():
    frames = {s: dets(walker(s)) for s in range(1, 5)}
    x, y, w, h = walker(5)
    frames[5] = dets((x + 40, y, w, h), (x + 25, y, w, h))  # both low IoU, the second nearer
    tracker = Tracker(iou_threshold=0.3, max_age_frames=5, min_hits=2, center_gate=0.5, id_origin=0)
    run(tracker, {s: d for s, d in frames.items() if s < 5})
    tracks = tracker.update(frames[5], 5, 0.5)
    assert [t.track_id for t in tracks] == [1 * ID_STRIDE]
    np.testing.assert_allclose(tracks[0].box, (x + 25, y, w, h))


def test_motion_gate_config_and_old_pickles():
    with pytest.raises(InvalidInput, match="center_gate"):
        Tracker(center_gate=-1)
    cfg = TrackingConfig(center_gate=0.75)
    assert Tracker.from_config(cfg).center_gate == 0.75
    # a tracker pickled before the gate existed (no attribute) keeps working, IoU only
    tracker = Tracker(iou_threshold=0.3, max_age_frames=5, min_hits=2, center_gate=0.5, id_origin=0)
    del tracker.center_gate
    out = run(tracker, _jump_frames())
    assert out[6] == [5 * ID_STRIDE]


def test_ids_are_numbered_from_the_first_frames_capture_time():
    # the pipeline's frame counter starts at 0 whenever a camera's state is lost; the capture
    # time of the tracker's first frame keeps later trackers off the ids of earlier ones
    frames = {s: dets(walker(s)) for s in range(3)}
    t0 = 1_780_000_000.0

    def ids(tracker, start_s):
        return {i for s, d in frames.items() for i in
                (t.track_id for t in tracker.update(d, s, start_s + s / 5))}

    first = ids(Tracker(min_hits=1), t0)
    assert first == {round(t0 * 1e6) * ID_STRIDE}
    later = ids(Tracker(min_hits=1), t0 + 3600)
    assert later == {round((t0 + 3600) * 1e6) * ID_STRIDE}
    assert ids(Tracker(min_hits=1), t0) == first  # the same frames again: the same ids
    tracker = Tracker(min_hits=1)
    ids(tracker, t0 + 60)
    tracker.reset()  # a new stream, or a replay: numbered from its own first frame again
    assert ids(tracker, t0) == first
    # trackers pickled before the origin existed go on numbering from 0
    old = Tracker(min_hits=1)
    del old.id_origin
    assert ids(old, t0) == {0}
    with pytest.raises(InvalidInput, match="id_origin"):
        Tracker(id_origin=-1)


def test_configure_changes_the_options_and_keeps_the_tracks():
    tracker = Tracker(min_hits=1, max_age_frames=2, id_origin=0)
    run(tracker, {1: dets(walker(1)), 2: dets(walker(2))})
    tracker.configure(TrackingConfig(min_hits=3, max_age_frames=10, iou_threshold=0.2,
                                     center_gate=0.0))
    assert (tracker.min_hits, tracker.max_age_frames, tracker.iou_threshold,
            tracker.center_gate) == (3, 10, 0.2, 0.0)
    # frames 3..7 missed: dropped at max_age 2, kept at 10
    assert run(tracker, {8: dets(walker(8))}) == {8: [1000]}
