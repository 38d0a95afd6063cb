"""Multi-camera scenes: determinism, truth boxes against the pixels, re-appearance, timeline."""

from __future__ import annotations

import collections

import numpy as np
import pydantic
import pytest

from pedsearch.errors import ConfigError, InvalidInput, NotFound
from pedsearch.synthetic.scene import Scene, SceneConfig, SceneFrame


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene(SceneConfig(num_cameras=3, num_people=10, duration_s=40.0, fps=4.0, seed=7))


@pytest.fixture(scope="module")
def frames(scene: Scene) -> dict[str, list[SceneFrame]]:
    return {c: list(scene.frames(c, with_masks=True)) for c in scene.camera_ids}


def test_config_is_strict() -> None:
    with pytest.raises(pydantic.ValidationError):
        SceneConfig(num_camera=3)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        SceneConfig(min_person_px=300)
    with pytest.raises(ConfigError, match="num_cameras"):
        Scene({"num_cameras": 0})


def test_frames_shape_and_clock(scene: Scene, frames: dict[str, list[SceneFrame]]) -> None:
    assert scene.camera_ids == ["cam00", "cam01", "cam02"]
    for cid, fs in frames.items():
        assert len(fs) == scene.num_frames == 160
        for i, f in enumerate(fs[:5]):
            assert f.camera_id == cid and f.seq == i and f.ts_s == pytest.approx(i / 4.0)
            assert f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8


def test_same_config_same_frames(frames: dict[str, list[SceneFrame]]) -> None:
    again = Scene(SceneConfig(num_cameras=3, num_people=10, duration_s=40.0, fps=4.0, seed=7))
    for cid in ("cam01", "cam02"):
        for f, g in zip(frames[cid][40:60], again.frames(cid, start=40, stop=60)):
            assert np.array_equal(f.image, g.image)
            assert f.truth == g.truth
    other = Scene(SceneConfig(num_cameras=3, num_people=10, duration_s=40.0, fps=4.0, seed=8))
    assert not np.array_equal(next(other.frames("cam00")).image, frames["cam00"][0].image)


def test_truth_boxes_match_person_pixels(scene: Scene,
                                         frames: dict[str, list[SceneFrame]]) -> None:
    n_boxes = n_full = 0
    for cid, fs in frames.items():
        bg = scene.background(cid).astype(int)
        for f in fs:
            assert f.instance_mask is not None
            for i, t in enumerate(f.truth):
                x, y, w, h = t.box
                assert 0 <= x and 0 <= y and w >= 1 and h >= 1
                assert x + w <= 640 and y + h <= 360
                assert 0.0 <= t.visibility <= 1.0
                ys, xs = np.nonzero(f.instance_mask == i + 1)
                if len(xs):  # every visible pixel of the person lies inside its box
                    assert xs.min() >= x and xs.max() < x + w
                    assert ys.min() >= y and ys.max() < y + h
                    # and the frame differs from the empty view there: a person is drawn
                    diff = np.abs(f.image[ys, xs].astype(int) - bg[ys, xs]).max(axis=1)
                    assert np.mean(diff > 20) > 0.4
                if t.visibility == 1.0:  # whole figure visible: the box is tight on it
                    assert (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                            ys.max() - ys.min() + 1) == t.box
                    n_full += 1
                n_boxes += 1
    assert n_boxes > 200 and n_full > 50


def test_people_are_at_least_min_height(frames: dict[str, list[SceneFrame]]) -> None:
    heights = [t.box[3] for fs in frames.values() for f in fs for t in f.truth
               if t.visibility == 1.0 and t.box[1] > 0 and t.box[1] + t.box[3] < 360]
    assert min(heights) >= 0.9 * 60
    assert max(heights) > 120  # and near people are big


def test_people_occlude_each_other(frames: dict[str, list[SceneFrame]]) -> None:
    partial = [t.visibility for fs in frames.values() for f in fs for t in f.truth
               if 0.0 < t.visibility < 0.95 and 5 < t.box[0] and t.box[0] + t.box[2] < 635]
    assert partial, "no person was ever partly hidden by another"


def test_track_ids_are_unique_per_camera_walk(frames: dict[str, list[SceneFrame]]) -> None:
    owner: dict[int, tuple[str, int]] = {}
    for cid, fs in frames.items():
        for f in fs:
            for t in f.truth:
                assert owner.setdefault(t.track_id, (cid, t.person_id)) == (cid, t.person_id)


def test_timeline_agrees_with_frames(scene: Scene, frames: dict[str, list[SceneFrame]]) -> None:
    seen: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    for cid, fs in frames.items():
        for f in fs:
            for t in f.truth:
                seen[(cid, t.track_id)].append(f.seq)
    timeline = scene.timeline()
    spans = {(s.camera_id, s.track_id): s for cid in timeline for s in timeline[cid]}
    assert set(spans) == set(seen)
    for key, seqs in seen.items():
        s = spans[key]
        assert (s.first_seq, s.last_seq, s.frames) == (min(seqs), max(seqs), len(seqs))
        assert s.first_ts_s == pytest.approx(s.first_seq / 4.0)


def test_people_reappear_in_other_cameras(scene: Scene) -> None:
    by_person = collections.defaultdict(list)
    for cid, spans in scene.timeline().items():
        for s in spans:
            by_person[s.person_id].append(s)
    moved = 0
    for spans in by_person.values():
        spans.sort(key=lambda s: s.first_ts_s)
        for a, b in zip(spans, spans[1:]):
            assert b.first_ts_s > a.last_ts_s  # one place at a time
            if a.camera_id != b.camera_id:
                moved += 1
    assert moved >= 3
    assert len(by_person) >= 8  # most people are seen at all


def test_people_enter_and_leave(scene: Scene) -> None:
    spans = [s for ss in scene.timeline().values() for s in ss]
    ended = [s for s in spans if s.last_seq < scene.num_frames - 1]
    started = [s for s in spans if s.first_seq > 0]
    assert len(ended) >= 5 and len(started) >= 5


def test_bad_camera_and_range(scene: Scene) -> None:
    with pytest.raises(NotFound, match="cam00"):
        next(scene.frames("cam99"))
    with pytest.raises(InvalidInput):
        next(scene.frames("cam00", start=5, stop=2))
    with pytest.raises(NotFound):
        scene.person(10_000)


def test_static_background_outside_people() -> None:
    """Without sensor noise, every pixel away from the people is the camera's empty view."""
    scene = Scene(SceneConfig(num_cameras=1, num_people=6, duration_s=20.0, fps=2.0, seed=3,
                              noise_sigma=0.0, foreground_occluders=False))
    bg = scene.background("cam00")
    for f in scene.frames("cam00"):
        away = np.ones(bg.shape[:2], bool)
        for t in f.truth:
            x, y, w, h = t.box
            m = int(0.45 * h)
            away[max(0, y - m):y + h + m, max(0, x - m):x + w + m] = False
        assert np.array_equal(f.image[away], bg[away])


def test_sensor_noise_is_mild_and_varies() -> None:
    scene = Scene(SceneConfig(num_cameras=1, num_people=1, duration_s=2.0, fps=2.0, seed=4,
                              foreground_occluders=False))
    bg = scene.background("cam00").astype(int)
    a, b = [f.image.astype(int) for f in scene.frames("cam00", stop=2)]
    empty = np.ones(bg.shape[:2], bool)
    noise = (a - bg)[empty]
    assert 1.0 < noise.std() < 4.0 and abs(noise.mean()) < 0.5
    assert (a != b).any()
