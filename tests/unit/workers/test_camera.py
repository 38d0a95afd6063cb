"""The camera side without Kafka: the publisher's size limit, file sources' timestamps."""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np
import pytest
from kafka.future import Future

from pedsearch.v1 import frame_pb2
from workers.camera.publisher import FramePublisher
from workers.camera.sources import FileSource, SourceFrame


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        future = Future()
        future.success(None)
        return future


def test_an_oversized_frame_is_skipped_counted_and_the_stream_goes_on(caplog):
    producer = Producer()
    publisher = FramePublisher(producer=producer, topic="frames", max_bytes=20_000)
    rng = np.random.default_rng(0)
    small = np.zeros((120, 160, 3), np.uint8)  # a few hundred bytes as JPEG
    noisy = rng.integers(0, 255, (360, 640, 3), np.uint8)  # far over 20 kB
    with caplog.at_level(logging.WARNING, logger="pedsearch.camera"):
        sent = [publisher.publish(SourceFrame("cam", image, 1_780_000_000_000_000 + i))
                for i, image in enumerate([small, noisy, small, noisy, small])]
    assert sent == [True, False, True, False, True]
    s = publisher.stats
    assert (s.sent, s.acked, s.failed, s.oversized) == (3, 3, 2, 2)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "--jpeg-quality" in warnings[0]
    # the skipped frames leave a gap in seq, which the workers count as frames without people
    seqs = []
    for _, key, value in producer.sent:
        frame = frame_pb2.Frame()
        frame.ParseFromString(value)
        assert key == b"cam"
        seqs.append(frame.seq)
    assert seqs == [0, 2, 4]


@pytest.fixture
def video(tmp_path):
    """A 3 s MJPEG video at 10 fps (frame i is grey level 8 * i)."""
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPEG AVI files")
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    return path


def _stamps(source) -> list[float]:
    """Capture times of the frames, in seconds from the first."""
    ts = [sf.capture_ts_us for sf in source.frames(threading.Event())]
    return [round((t - ts[0]) / 1e6, 3) for t in ts]


def test_a_video_published_as_fast_as_possible_keeps_its_own_timing(video):
    # published in a blink, stamped as filmed: three seconds of video span three seconds
    stamps = _stamps(FileSource(path=video, camera_id="cam", realtime=False))
    assert stamps == [round(i * 0.1, 3) for i in range(30)]
    # sampled at 5 fps: every other frame, 0.2 s apart
    stamps = _stamps(FileSource(path=video, camera_id="cam", fps=5.0, realtime=False))
    assert stamps == [round(i * 0.2, 3) for i in range(15)]
    # looped: the second pass follows the first instead of going back in time
    stamps = _stamps(FileSource(path=video, camera_id="cam", realtime=False, loop=True,
                                max_frames=45))
    assert stamps == [round(i * 0.1, 3) for i in range(45)]
    stamps = _stamps(FileSource(path=video, camera_id="cam", fps=5.0, realtime=False,
                                loop=True, max_frames=20))
    assert stamps == [round(i * 0.2, 3) for i in range(20)]


def test_an_image_folder_published_as_fast_as_possible_is_stamped_at_its_fps(tmp_path):
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i:04d}.jpg"), np.full((48, 64, 3), 40 * i, np.uint8))
    stamps = _stamps(FileSource(path=tmp_path, camera_id="cam", fps=5.0, realtime=False))
    assert stamps == [0.0, 0.2, 0.4, 0.6]


def test_an_envelope_at_the_limit_fits_the_producers_request_size():
    """The publisher checks the envelope against kafka.max_message_bytes; kafka-python's own
    check also counts the key and the record's framing, and raised (ending the camera) for
    envelopes a few bytes under the limit."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    from pedsearch.config import KafkaConfig
    from workers.camera.publisher import RECORD_OVERHEAD_BYTES

    limit = KafkaConfig().max_message_bytes
    key = b"c" * 64  # the longest camera id
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, bytes(limit), [])
    assert size > limit  # what the producer compares with its max_request_size
    assert size <= limit + RECORD_OVERHEAD_BYTES
