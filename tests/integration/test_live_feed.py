"""The live feed's camera summary on a real Redis server: counts add up and the span keeps the
earliest first and the latest last capture time, whatever order publishers write in."""

from __future__ import annotations

import threading

import numpy as np
import redis

from pedsearch.live import LiveFeed, cameras_key, stream_key
from pedsearch.schema import DetectionRow


def _row(i: int, camera: str, ts_us: int) -> DetectionRow:
    return DetectionRow(id=i, camera_id=camera, ts_us=ts_us, track_id=1, frame_seq=i,
                        box=(0.0, 0.0, 10.0, 20.0), det_score=0.9, crop_ref=f"crop/{i}",
                        model_version="v1", embedding=np.ones(8, np.float32) / np.sqrt(8),
                        attributes=np.zeros(3, np.float32))


def test_camera_summary_keeps_min_first_max_last_across_concurrent_publishers(redis_server):
    client = redis.Redis.from_url(redis_server)
    client.delete(cameras_key("live-test"), stream_key("live-test"))
    feeds = [LiveFeed(redis.Redis.from_url(redis_server), "live-test") for _ in range(4)]
    # publisher k writes 25 batches of 2 rows; timestamps interleave, so late batches of one
    # publisher are older than early batches of another
    def publish(k: int) -> None:
        for b in range(25):
            base = 1_000_000 + (b * 4 + (3 - k)) * 1000
            feeds[k].publish([_row(k * 1000 + b * 2, "cam-a", base),
                              _row(k * 1000 + b * 2 + 1, "cam-b", base + 7)])

    threads = [threading.Thread(target=publish, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = feeds[0].cameras()
    assert summary["cam-a"] == {"count": 100, "first": 1_000_000, "last": 1_000_000 + 99_000}
    assert summary["cam-b"] == {"count": 100, "first": 1_000_007, "last": 1_000_000 + 99_007}
    assert client.xlen(stream_key("live-test")) == 200
