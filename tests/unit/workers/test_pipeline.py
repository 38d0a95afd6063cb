"""CameraPipeline: deterministic crops, and a save/restore in mid-stream changes nothing.

This is the property the consumer's no-loss / no-duplicate guarantee rests on: a worker that
dies restores the state of its last checkpoint, replays the frames after it, and must emit the
same crop ids as a worker that never died.
"""

import pickle
import threading
import time

import numpy as np
import pytest

from pedsearch.config import Settings, TrackingConfig
from pedsearch.envelope import decode_frame, make_frame
from workers.camera.sources import SyntheticSource
from workers.pipeline import pipeline_factory


@pytest.fixture(scope="module")
def stream():
    """Frames of one synthetic camera as (partition offset, DecodedFrame)."""
    src = SyntheticSource(camera_id="cam", cameras=1, people=6, seed=5, fps=5.0,
                          duration_s=30.0, realtime=False)
    out = []
    for i, sf in enumerate(src.frames(threading.Event())):
        f = make_frame(camera_id=sf.camera_id, seq=i, image=sf.image,
                       capture_ts_us=sf.capture_ts_us)
        out.append((i, decode_frame(f.SerializeToString(), key=None, max_bytes=1 << 22)))
    return out


def run(make, frames, pipe=None):
    pipe = pipe or make("cam-0")
    crops = []
    for offset, d in frames:
        crops += pipe.process(d, offset=offset)
    return pipe, crops


def uninterrupted(stream, early_emit: bool):
    """The pipeline factory, and the crop ids of the whole stream played without a break."""
    settings = Settings()
    settings.tracking.early_emit = early_emit
    make = pipeline_factory(settings)
    pipe, crops = run(make, stream)
    return make, {c.id for c in crops + pipe.finish()}


@pytest.mark.parametrize("early_emit", [True, False])
def test_restore_mid_stream_gives_the_same_ids(stream, early_emit):
    make, reference = uninterrupted(stream, early_emit)
    assert len(reference) >= 3

    cut = len(stream) // 2
    first, part1 = run(make, stream[:cut])
    saved = pickle.dumps(first.state_dict())
    # a fresh process: new pipeline, state from the checkpoint, detector re-warmed on the
    # frames before the checkpoint, then the frames after it
    restored = make("cam-0")
    restored.load_state_dict(pickle.loads(saved))
    start = restored.replay_from
    for offset, d in stream:
        if start is not None and start <= offset < cut:
            restored.warm(d)
    _, part2 = run(make, stream[cut:], restored)
    resumed = {c.id for c in part1 + part2 + restored.finish()}
    assert resumed == reference


def test_one_crop_per_track_window(stream):
    settings = Settings()
    make = pipeline_factory(settings)
    pipe, crops = run(make, stream)
    crops += pipe.finish()
    keys = [(c.track_id, c.window) for c in crops]
    # early emission stores a window's first crop and then its best under the same id
    assert len(set(keys)) == len({c.id for c in crops})
    assert all(keys.count(k) <= 2 for k in set(keys))


@pytest.mark.parametrize("early_emit", [True, False])
def test_closing_a_quiet_cameras_windows_stores_each_window_once(stream, early_emit):
    make, reference = uninterrupted(stream, early_emit)

    cut = len(stream) // 2
    pipe, part1 = run(make, stream[:cut])
    assert pipe.has_open_windows()
    closed = pipe.close_windows()
    assert closed and not pipe.has_open_windows()
    # the camera comes back: no window stored twice under different ids, none lost
    _, part2 = run(make, stream[cut:], pipe)
    got = part1 + closed + part2 + pipe.finish()
    assert {c.id for c in got} == reference
    final = [c for c in closed + part2 + pipe.finish() if c.id in {x.id for x in closed}]
    assert len(final) == len(closed), "a closed window was emitted again"


def test_a_bad_detector_stops_the_workers_at_start_and_names_the_camera():
    from pedsearch.config import load_settings
    from pedsearch.errors import ConfigError

    settings = load_settings(cameras={"gate-3": {"detector": {"type": "yolo"}}})
    with pytest.raises(ConfigError, match="cameras.gate-3.detector: unknown detector 'yolo'"):
        pipeline_factory(settings)


# ------------------------------------------------------------- restarts and restored state

class Scripted:
    """A detector returning the boxes the test sets before each frame."""

    warmup_frames = 0

    def __init__(self) -> None:
        self.boxes: list[tuple[float, float, float, float]] = []

    def __call__(self, frames):
        from workers.detectors import Detections

        return [Detections(np.array(self.boxes, np.float32).reshape(-1, 4),
                           np.ones(len(self.boxes), np.float32)) for _ in frames]

    def reset(self):
        pass


T0_US = int(time.time() * 1e6)
IMAGE = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)


def _frame(seq: int, ts_us: int):
    from pedsearch.envelope import DecodedFrame
    from pedsearch.v1 import frame_pb2

    frame = frame_pb2.Frame(format_version=1, camera_id="cam", seq=seq, capture_ts_us=ts_us,
                            width=640, height=360)
    return DecodedFrame(frame=frame, image=IMAGE)


def _play(pipe, frames, boxes=((100, 100, 60, 150),), finish=True):
    """Feed ``(seq, ts_us)`` frames, each with ``boxes`` (or ``boxes(i)``); returns the crops."""
    out = []
    for i, (seq, ts_us) in enumerate(frames):
        pipe.detector.boxes = list(boxes(i) if callable(boxes) else boxes)
        out += pipe.process(_frame(seq, ts_us))
    return out + (pipe.finish() if finish else [])


def _fresh(tracking=None):
    from workers.pipeline import CameraPipeline

    return CameraPipeline(camera_id="cam", detector=Scripted(),
                          tracking=tracking or Settings().tracking)


def test_fresh_pipelines_later_in_a_stream_never_reuse_ids():
    # a camera's state lost (snapshot missing or of an older format) while Kafka kept its
    # offset: the pipeline starts afresh an hour later, its frame counter at 0 again
    first = [(i, T0_US + i * 200_000) for i in range(10)]
    later = [(5000 + i, T0_US + 3600 * 10**6 + i * 200_000) for i in range(10)]
    early_ids = {c.id for c in _play(_fresh(), first)}
    late = _play(_fresh(), later, boxes=[(400, 150, 60, 150)])
    assert early_ids and late
    assert not early_ids & {c.id for c in late}, "a new person overwrote an earlier one's rows"
    # the same frames processed again (a replay after a crash) upsert the very same ids
    assert {c.id for c in _play(_fresh(), first)} == early_ids
    assert {c.id for c in _play(_fresh(), later, boxes=[(400, 150, 60, 150)])} == {
        c.id for c in late}


def test_a_restored_pipeline_replays_with_the_same_ids():
    frames = [(i, T0_US + i * 200_000) for i in range(40)]
    reference = {c.id for c in _play(_fresh(), frames)}
    pipe = _fresh()
    part1 = _play(pipe, frames[:17], finish=False)
    restored = _fresh()
    restored.load_state_dict(pickle.loads(pickle.dumps(pipe.state_dict())))
    part2 = _play(restored, frames[17:])
    assert {c.id for c in part1 + part2} == reference


def test_a_restored_pipeline_runs_with_the_tracking_settings_configured_now():
    old = TrackingConfig(window_s=4, min_hits=2, max_age_frames=5, iou_threshold=0.3,
                         center_gate=0.5, min_box_height=48)
    new = TrackingConfig(window_s=30, min_hits=5, max_age_frames=50, iou_threshold=0.2,
                         center_gate=0.8, min_box_height=64)
    frames = [(i, T0_US + i * 200_000) for i in range(100)]  # 20 s at 5 fps

    def boxes(i):  # A walks all along; B appears after 8 s, once the settings changed
        walkers = [(100 + i, 100, 60, 150)]
        return walkers + [(400 + i, 150, 60, 150)] if i >= 40 else walkers

    pipe = _fresh(old)
    crops = _play(pipe, frames[:30], boxes, finish=False)  # 6 s with the old settings
    restored = _fresh(new)
    restored.load_state_dict(pickle.loads(pickle.dumps(pipe.state_dict())))
    tracker, selector = restored.tracker, restored.selector
    assert (tracker.min_hits, tracker.max_age_frames, tracker.iou_threshold,
            tracker.center_gate) == (5, 50, 0.2, 0.8)
    assert (selector.window_s, selector.min_box_height) == (30, 64)
    # the offsets into the rest of the stream are those of the restored run
    crops += _play(restored, frames[30:], lambda i: boxes(i + 30))
    windows: dict[int, set[int]] = {}
    for c in crops:
        windows.setdefault(c.track_id, set()).add(c.window)
    a, b = sorted(windows)
    # A was being cut into 4 s windows: it keeps them (a window re-cut with 30 s would reuse
    # the index, so the id, of a stored one, or skip its frames as late)
    assert windows[a] == {0, 1, 2, 3, 4}
    assert windows[b] == {0}  # B, born after the restore, has 30 s windows
    ids = {(c.track_id, c.window): c.id for c in crops}
    assert len(set(ids.values())) == len(ids)


def test_relative_model_paths_are_read_under_the_configured_models_root(tmp_path, monkeypatch):
    # paths.models_root set in the configuration file (not the environment, which a Ray worker
    # on another machine does not share) is where the detector files are looked for
    from pedsearch.config import load_settings
    from pedsearch.errors import ConfigError

    monkeypatch.delenv("PEDSEARCH_PATHS__MODELS_ROOT", raising=False)
    (tmp_path / "yolox-nano").mkdir()
    model = tmp_path / "yolox-nano" / "yolox_nano.onnx"
    model.write_bytes(b"not ONNX")  # found, then refused: proves where it was looked for
    config = tmp_path / "site.yaml"
    config.write_text(f"paths:\n  models_root: {tmp_path}\n"
                      "workers:\n  default_detector: {type: yolox}\n")
    with pytest.raises(ConfigError, match="cannot load ONNX model") as err:
        pipeline_factory(load_settings(config))
    assert str(model) in err.value.message
    # a detector's own models_root still wins
    other = tmp_path / "elsewhere"
    config.write_text(f"paths:\n  models_root: {tmp_path}\n"
                      f"workers:\n  default_detector: {{type: yolox, models_root: {other}}}\n")
    with pytest.raises(ConfigError, match="not found") as err:
        pipeline_factory(load_settings(config))
    assert str(other / "yolox-nano" / "yolox_nano.onnx") in err.value.message


def test_a_jump_in_a_cameras_numbering_keeps_the_ids_in_int64():
    """A producer whose counter wraps (seq 2**64 - 1) must not push the track ids, which
    Milvus stores as int64, past 2**63 - 1: every later crop of the camera would fail."""
    from workers.pipeline import MAX_SEQ_GAP

    pipe = _fresh()
    frames = [(0, T0_US), (1, T0_US + 200_000), (2**64 - 1, T0_US + 400_000),
              *[(2**64 - 1 + i, T0_US + (2 + i) * 200_000) for i in range(1, 8)]]
    frames = [(seq % 2**64, ts) for seq, ts in frames]  # the wrapped numbering goes on at 0
    crops = _play(pipe, frames)
    assert crops and max(c.track_id for c in crops) < 2**63
    assert max(c.frame_seq for c in crops) <= 2 + MAX_SEQ_GAP + 8
