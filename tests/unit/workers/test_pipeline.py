"""CameraPipeline: deterministic crops, and a save/restore in mid-stream changes nothing.

This is the property the consumer's no-loss / no-duplicate guarantee rests on: a worker that
dies restores the state of its last checkpoint, replays the frames after it, and must emit the
same crop ids as a worker that never died.
"""

import pickle
import threading

import pytest

from pedsearch.config import Settings
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
