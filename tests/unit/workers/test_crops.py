"""Best-crop selection per track window, and deterministic crop ids."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pedsearch.config import TrackingConfig
from pedsearch.errors import InvalidInput
from workers.crops import BestCropSelector, deterministic_id
from workers.tracking import Track


def track(track_id: int, ts: float, box=(100, 50, 40, 100), score: float = 0.9,
          start_ts: float = 0.0, seq: int | None = None) -> Track:
    box = np.asarray(box, np.float32)
    return Track(track_id=track_id, box=box, smoothed_box=box, score=score, det_index=0,
                 frame_seq=round(ts * 10) if seq is None else seq, ts=ts, start_seq=0,
                 start_ts=start_ts, hits=5)


def textured_frame(seed: int = 0, shape=(240, 320)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


# ---------------------------------------------------------------- ids


def test_deterministic_id_is_pinned_and_in_signed_63_bit_range():
    # blake2b-64 of "cam-1\x1f1000\x1f0" is c59e63b619876632; top bit cleared
    assert deterministic_id("cam-1", 1000, 0) == 0x459E63B619876632  # = 5016556668700812850
    ids = {deterministic_id(c, t, w) for c in ("cam-1", "cam-2") for t in (1000, 1001)
           for w in range(50)}
    assert len(ids) == 200
    assert all(0 <= i < 2**63 for i in ids)
    # the separator keeps ("cam-1", 10, 0) apart from ("cam-11", 0, 0)
    assert deterministic_id("cam-1", 10, 0) != deterministic_id("cam-11", 0, 0)


@pytest.mark.parametrize("args", [("", 1, 0), (None, 1, 0), ("cam", -1, 0), ("cam", 1, -2)])
def test_deterministic_id_rejects_bad_input(args):
    with pytest.raises(InvalidInput):
        deterministic_id(*args)


# ---------------------------------------------------------------- windows


def test_exactly_one_crop_per_window_aligned_to_track_start():
    selector = BestCropSelector(camera_id="cam-1", window_s=4.0, min_box_height=48)
    frame = textured_frame()
    emitted = []
    # a track living from 2.5 s to 12.4 s at 10 fps: windows [2.5, 6.5), [6.5, 10.5), [10.5, ..)
    for i in range(25, 125):
        ts = i / 10
        got = selector.update(frame, [track(7, ts, start_ts=2.5)])
        emitted += [(c.window, ts) for c in got]
    assert emitted == [(0, 6.5), (1, 10.5)]  # emitted when the track enters the next window
    final = selector.finish()
    assert [(c.window, c.track_id, c.camera_id) for c in final] == [(2, 7, "cam-1")]
    assert selector.pending_count() == 0 and selector.finish() == []


def test_picks_the_sharper_crop():
    sharp = textured_frame(1)
    blurred = cv2.GaussianBlur(sharp, (9, 9), 3)
    for order in ([sharp, blurred], [blurred, sharp]):
        selector = BestCropSelector(camera_id="c", window_s=4.0, min_box_height=48)
        for i, frame in enumerate(order):
            assert selector.update(frame, [track(1, 1.0 + i / 10, seq=10 + i)]) == []
        (crop,) = selector.finish()
        assert crop.frame_seq == 10 + [id(f) for f in order].index(id(sharp))
        assert selector.sharpness_term(sharp, crop.box) > selector.sharpness_term(
            blurred, crop.box)


def test_picks_the_larger_crop_and_skips_small_boxes():
    frame = textured_frame(2)
    selector = BestCropSelector(camera_id="c", window_s=4.0, min_box_height=48)
    small = track(1, 0.1, box=(100, 50, 20, 40), seq=1)  # below min_box_height: never kept
    medium = track(1, 0.2, box=(100, 50, 30, 60), seq=2)
    large = track(1, 0.3, box=(100, 50, 60, 120), seq=3)
    lower_score = track(1, 0.4, box=(100, 50, 60, 120), score=0.5, seq=4)
    for t in (small, large, medium, lower_score):
        selector.update(frame, [t])
    (crop,) = selector.finish()
    assert crop.frame_seq == 3 and crop.det_score == pytest.approx(0.9)
    assert crop.id == deterministic_id("c", 1, 0)

    only_small = BestCropSelector(camera_id="c", window_s=4.0, min_box_height=48)
    only_small.update(frame, [small])
    assert only_small.finish() == []


def test_crop_is_the_box_grown_by_the_margin_and_clipped_to_the_frame():
    frame = textured_frame(3)
    selector = BestCropSelector(camera_id="c", window_s=4.0, min_box_height=10, margin=0.1)
    selector.update(frame, [track(1, 0.0, box=(100, 50, 40, 100)),
                            track(2, 0.0, box=(0, 180, 40, 60))])
    inner, edge = selector.finish()
    np.testing.assert_array_equal(inner.crop_box, [96, 40, 48, 120])
    np.testing.assert_array_equal(inner.crop, frame[40:160, 96:144])
    np.testing.assert_array_equal(edge.crop_box, [0, 174, 44, 66])  # clipped left and bottom
    assert edge.crop.shape == (66, 44, 3)


def test_box_at_the_frame_edge_scores_lower_than_the_same_box_inside():
    frame = np.tile(textured_frame(4, (100, 40)), (3, 8, 1))  # the same texture repeats
    selector = BestCropSelector(camera_id="c", min_box_height=10)
    inside = selector.quality(frame, np.array([40, 100, 40, 100]), 0.9)
    at_edge = selector.quality(frame, np.array([0, 100, 40, 100]), 0.9)
    assert at_edge == pytest.approx(inside / 2, rel=1e-6)


def test_flush_and_end_close_windows_by_stream_time_and_track_end():
    frame = textured_frame(5)
    selector = BestCropSelector.from_config(TrackingConfig(window_s=2.0, min_box_height=48),
                                            camera_id="cam-9")
    selector.update(frame, [track(1, 0.5), track(2, 0.5, box=(200, 50, 40, 100))])
    assert selector.flush(1.9) == []
    assert [c.track_id for c in selector.flush(2.0)] == [1, 2]  # both windows end at 2.0
    # a late frame of a window already emitted is ignored, a new window is not
    assert selector.update(frame, [track(1, 1.9)]) == [] and selector.pending_count() == 0
    selector.update(frame, [track(1, 2.1)])
    assert [(c.track_id, c.window) for c in selector.end([1])] == [(1, 1)]
    assert selector.finish() == []


def test_close_all_emits_open_windows_and_keeps_the_late_frame_guard():
    frame = textured_frame(6)
    selector = BestCropSelector(camera_id="cam-9", window_s=2.0, min_box_height=48)
    selector.update(frame, [track(1, 0.5), track(2, 0.5, box=(200, 50, 40, 100))])
    assert [(c.track_id, c.window) for c in selector.close_all()] == [(1, 0), (2, 0)]
    assert selector.close_all() == []
    # the camera resumes: the rest of a closed window is skipped (its id is stored), the
    # next window opens as usual
    assert selector.update(frame, [track(1, 1.0)]) == [] and selector.pending_count() == 0
    selector.update(frame, [track(1, 2.5)])
    assert [(c.track_id, c.window) for c in selector.finish()] == [(1, 1)]


def test_replay_gives_identical_candidates():
    frames = [textured_frame(i) for i in range(6)]

    def play() -> list[tuple]:
        selector = BestCropSelector(camera_id="cam", window_s=0.25, min_box_height=48)
        out = []
        for i, frame in enumerate(frames):
            out += selector.update(frame, [track(3, i / 10, seq=i)])
        out += selector.finish()
        return [(c.id, c.window, c.frame_seq, c.quality, c.crop.tobytes()) for c in out]

    first = play()
    assert first == play()
    assert [w for _, w, *_ in first] == [0, 1, 2]


def test_bad_options_and_frames_are_rejected():
    with pytest.raises(InvalidInput, match="camera_id"):
        BestCropSelector(camera_id="")
    with pytest.raises(InvalidInput, match="window_s"):
        BestCropSelector(camera_id="c", window_s=0)
    with pytest.raises(InvalidInput, match="uint8"):
        BestCropSelector(camera_id="c").update(np.zeros((10, 10), np.uint8), [])


def test_pending_crop_has_the_final_id_and_state_survives_pickling():
    import pickle

    frame, sharper = textured_frame(6), textured_frame(7)
    selector = BestCropSelector(camera_id="cam", window_s=4.0, min_box_height=48)
    assert selector.pending(1) is None
    selector.update(cv2.GaussianBlur(frame, (9, 9), 3), [track(1, 0.1, seq=1)])
    early = selector.pending(1)
    assert early is not None and early.frame_seq == 1
    restored = pickle.loads(pickle.dumps(selector))  # checkpointed with the partition state
    for s in (selector, restored):
        s.update(sharper, [track(1, 0.2, seq=2)])
    final, again = selector.finish(), restored.finish()
    assert [c.id for c in final] == [c.id for c in again] == [early.id]
    assert final[0].frame_seq == again[0].frame_seq == 2
