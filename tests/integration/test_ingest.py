"""The streaming ingest path on the real embedded servers and a real Ray runtime.

camera (synthetic scene) -> Kafka-API broker -> Ray consumer + embedder actors -> Milvus.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict

import numpy as np
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from pymilvus import MilvusClient

from deploy.stack import RedisServer
from pedsearch.envelope import make_frame
from pedsearch.schema import collection_name
from pedsearch.bundle import read_manifest

from workers.camera.publisher import FramePublisher, make_producer
from workers.camera.sources import SyntheticSource
from workers.detectors.base import iou_matrix
from workers.cli import status_table
from workers.metrics import read_snapshots, serve_metrics, total
from workers.runtime import IngestWorkers

pytestmark = pytest.mark.integration

SCENE = dict(cameras=3, people=8, seed=11, fps=5.0, duration_s=24.0)


def _variant(settings, bundle):
    s = settings.model_copy(deep=True)
    s.model.bundle = bundle
    s.workers.consumers = 1
    s.workers.embedders = 1
    s.workers.embed_batch = 16
    return s


@pytest.fixture
def ingest_settings(settings, ingest_bundle_path, ray_local):
    return _variant(settings, ingest_bundle_path)


@pytest.fixture
def ingest_settings_factory(settings, ingest_bundle_path, ray_local):
    """More settings like ``ingest_settings`` with their own topic, group and collection."""

    def make():
        s = _variant(settings, ingest_bundle_path)
        tag = uuid.uuid4().hex[:6]
        s.kafka.frames_topic += tag
        s.kafka.dlq_topic += tag
        s.kafka.consumer_group += tag
        s.milvus.alias += tag
        s.milvus.collection_prefix = s.milvus.collection_prefix[:-2] + tag + "_v"
        s.paths.crops_dir = s.paths.crops_dir.with_name("crops" + tag)
        return s

    return make


def publish_scene(settings, start_us=None, **scene) -> dict[str, list]:
    """Publish a synthetic scene as fast as possible; returns the frames' truth per camera.

    ``start_us``: capture time of the scene's start (default now); the same value publishes
    the very same frames again.
    """
    source = SyntheticSource(camera_id="cam", realtime=False, start_us=start_us,
                             **(scene or SCENE))
    publisher = FramePublisher(producer=make_producer(settings.kafka),
                               topic=settings.kafka.frames_topic)
    truth: dict[str, list] = defaultdict(list)
    for sf in source.frames(threading.Event()):
        publisher.publish(sf)
        truth[sf.camera_id].append(sf.truth)
    publisher.close()
    assert publisher.stats.failed == 0
    return truth


def stored_rows(settings) -> list[dict]:
    client = MilvusClient(uri=settings.milvus.uri)
    name = collection_name(settings.milvus, read_manifest(settings.model.bundle)["version"])
    client.load_collection(name)
    rows = client.query(name, filter="id != 0", limit=16384,
                        output_fields=["id", "camera_id", "track_id", "frame_seq", "ts_us",
                                       "box_x", "box_y", "box_w", "box_h", "crop_ref"],
                        consistency_level="Strong")
    client.close()
    return rows


def match_truth(rows, truth) -> dict[int, tuple[str, int] | None]:
    """Stored row id -> (camera, ground-truth track) by IoU >= 0.5 on the crop's frame."""
    out = {}
    for r in rows:
        frame_truth = truth[r["camera_id"]][r["frame_seq"]]
        people = list(frame_truth.people)
        if not people:
            out[r["id"]] = None
            continue
        gt = np.array([[p.box.x, p.box.y, p.box.w, p.box.h] for p in people], np.float32)
        box = np.array([[r["box_x"], r["box_y"], r["box_w"], r["box_h"]]], np.float32)
        iou = iou_matrix(box, gt)[0]
        j = int(iou.argmax())
        out[r["id"]] = (r["camera_id"], people[j].track_id) if iou[j] >= 0.5 else None
    return out


def run_workers(settings, idle_exit_s=8.0, kill_after_s=None):
    workers = IngestWorkers(settings)
    stop = threading.Event()
    killer = None
    if kill_after_s is not None:
        def kill():
            time.sleep(kill_after_s)
            pid = workers.pids()[0]
            os.kill(pid, signal.SIGKILL)
        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
    try:
        results = workers.run(stop, idle_exit_s=idle_exit_s)
    finally:
        workers.shutdown()
    return results, workers.restarts


def test_synthetic_stream_is_drained_into_milvus(ingest_settings):
    settings = ingest_settings
    # the cameras go quiet once the scene is consumed: their open windows are stored after
    # 1 s, well before the workers stop (8 s without frames)
    settings.tracking.idle_close_s = 1.0
    truth = publish_scene(settings)
    results, _ = run_workers(settings)
    total_frames = sum(len(v) for v in truth.values())
    assert sum(r["frames"] for r in results) == total_frames
    assert sum(r["idle_closed"] for r in results) > 0
    assert all(r["end_write_s"] == 0.0 for r in results), "windows were left for the end"
    # the times benchmarks/ingest.py counts throughput with: frames' crops acknowledged while
    # the frames flowed; the windows still open at the end written after the idle wait
    for r in results:
        if r["frames"]:
            assert r["first_frame_at"] <= r["last_frame_at"] <= r["last_write_at"]
            assert r["stream_write_at"] is not None
            assert r["stream_write_at"] <= r["last_write_at"]
            assert r["end_write_s"] >= 0.0
    # what `pedsearch status` and the Prometheus endpoint show: the workers' Redis snapshots
    client = redis.Redis.from_url(settings.redis.url)
    snaps = [x for x in read_snapshots(client)
             if x["worker"].startswith(settings.kafka.consumer_group + ":")]
    assert total(snaps, "pedsearch_frames_total") == total_frames
    text = "".join(str(c) for c in status_table(snaps).columns[1].cells)
    assert str(total_frames) in text
    served = serve_metrics(client, 0)
    port = served.server_address[1]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    served.shutdown()
    assert "pedsearch_frames_total" in body and 'worker="' in body
    rows = stored_rows(settings)
    assert rows, "nothing was stored"
    assert len({r["id"] for r in rows}) == len(rows)
    # every stored crop is a real person of the scene, and its crop file exists
    matches = match_truth(rows, truth)
    precision = sum(m is not None for m in matches.values()) / len(matches)
    assert precision >= 0.8, f"only {precision:.2f} of stored crops are people"
    # per camera: the ground-truth tracks found (recall) and no track stored many times over
    for cam, frames in truth.items():
        gt_tracks = {p.track_id for f in frames for p in f.people if p.visibility >= 0.5}
        found = {m[1] for m in matches.values() if m and m[0] == cam}
        recall = len(found & gt_tracks) / max(1, len(gt_tracks))
        assert recall >= 0.7, f"{cam}: found {len(found)} of {len(gt_tracks)} tracks"
    # a person walking past is stored once per track window, not once per frame: allow for
    # the tracker splitting a walk into a few tracks (occlusions), nothing like one per frame
    per_track = Counter(m for m in matches.values() if m)
    window_frames = settings.tracking.window_s * SCENE["fps"]
    windows = 0
    for (cam, track), n in per_track.items():
        span = sum(1 for f in truth[cam] for p in f.people if p.track_id == track)
        windows += math.ceil(span / window_frames)
        assert n <= 3 * math.ceil(span / window_frames) + 1, f"{cam} track {track}: {n} rows"
    assert sum(per_track.values()) <= 2.5 * windows


def test_consumer_killed_mid_stream_loses_and_duplicates_nothing(ingest_settings,
                                                                   ingest_settings_factory):
    # reference: the same stream (same frames, capture times included: ids derive from
    # them) processed without interruption
    start_us = int(time.time() * 1e6)
    reference = ingest_settings_factory()
    publish_scene(reference, start_us)
    run_workers(reference)
    expected = {r["id"]: r for r in stored_rows(reference)}

    settings = ingest_settings
    publish_scene(settings, start_us)
    results, restarts = run_workers(settings, kill_after_s=6.0)
    assert restarts >= 1, "the consumer was not killed"
    got = {r["id"]: r for r in stored_rows(settings)}
    assert set(got) == set(expected), (
        f"missing {len(set(expected) - set(got))}, extra {len(set(got) - set(expected))}"
    )


def test_a_redis_outage_pauses_the_workers_and_loses_nothing(ingest_settings,
                                                            ingest_settings_factory, tmp_path):
    # a Redis of this test's own: stopped once the consumer saved a checkpoint in it, started
    # again on the same port and data (append-only file) once the consumer failed on it
    server = RedisServer(port=0, data_dir=tmp_path / "redis")
    server.start()
    server.wait_ready(60)
    port = server.port
    settings = ingest_settings
    settings.redis.url = server.address
    start_us = int(time.time() * 1e6)
    reference = ingest_settings_factory()
    publish_scene(reference, start_us)
    run_workers(reference)
    expected = {r["id"] for r in stored_rows(reference)}

    publish_scene(settings, start_us)
    workers = IngestWorkers(settings)
    back, events = [], []

    def outage():
        client = redis.Redis.from_url(server.address)
        deadline = time.monotonic() + 120
        while not client.keys("pedsearch:state:*") and time.monotonic() < deadline:
            time.sleep(0.1)
        client.close()
        server.stop()
        events.append("stopped")
        while workers.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        again = RedisServer(port=port, data_dir=tmp_path / "redis")
        again.start()
        again.wait_ready(60)
        back.append(again)

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    try:
        results = workers.run(threading.Event(), idle_exit_s=10.0)
    finally:
        workers.shutdown()
        thread.join(timeout=120)
        for s in back:
            s.stop()
    assert events == ["stopped"] and back, "the outage did not happen while the workers ran"
    assert workers.restarts >= 1, "the outage stopped no consumer"
    assert len(results) == settings.workers.consumers  # each ended its run normally
    got = {r["id"] for r in stored_rows(settings)}
    assert got == expected, f"missing {len(expected - got)}, extra {len(got - expected)}"


def test_poison_messages_go_to_the_dead_letter_topic(ingest_settings):
    raw = ingest_settings.model_dump()
    raw["workers"]["unknown_cameras"] = "dead_letter"
    raw["cameras"] = {"good-cam": {}}
    settings = type(ingest_settings).model_validate(raw)  # validated as a settings file is
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    topic = settings.kafka.frames_topic
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    good = 0
    poison = {
        b"garbage": "undecodable",
        b"": "empty",
    }
    bad_version = make_frame(camera_id="good-cam", seq=0, image=image)
    bad_version.format_version = 7
    corrupt = make_frame(camera_id="good-cam", seq=0, image=image)
    corrupt.jpeg = b"\xff\xd8\xff" + bytes(100)
    unknown = make_frame(camera_id="stranger", seq=0, image=image)
    sent = []
    for i in range(12):
        f = make_frame(camera_id="good-cam", seq=i, image=image)
        producer.send(topic, key=b"good-cam", value=f.SerializeToString())
        good += 1
        if i == 3:
            for raw, reason in poison.items():
                producer.send(topic, key=b"good-cam", value=raw)
                sent.append(reason)
        if i == 6:
            producer.send(topic, key=b"good-cam", value=bad_version.SerializeToString())
            producer.send(topic, key=b"good-cam", value=corrupt.SerializeToString())
            producer.send(topic, key=b"stranger", value=unknown.SerializeToString())
            sent += ["bad_version", "corrupt_jpeg", "unknown_camera"]
        if i == 9:  # a good frame without its key (the camera id, which partitions the frames)
            producer.send(topic, value=make_frame(camera_id="good-cam", seq=i,
                                                  image=image).SerializeToString())
            sent.append("missing_key")
    producer.flush()
    results, _ = run_workers(settings)
    assert sum(r["frames"] for r in results) == good
    assert sum(r["dead_letters"] for r in results) == len(sent)
    consumer = KafkaConsumer(settings.kafka.dlq_topic,
                             bootstrap_servers=settings.kafka.bootstrap_servers,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000)
    reasons = []
    for msg in consumer:
        headers = dict(msg.headers)
        reasons.append(headers["pedsearch-reason"].decode())
        assert headers["pedsearch-topic"].decode() == topic
        assert int(headers["pedsearch-offset"]) >= 0
        if len(reasons) == len(sent):
            break
    consumer.close()
    assert sorted(reasons) == sorted(sent)


def test_real_street_frames_play_through_the_whole_path(ingest_settings):
    """The MOT17 frames as a camera (image folder source) with the learned detector."""
    settings = ingest_settings
    data_root = settings.paths.resolved_data_root()
    models_root = settings.paths.resolved_models_root()
    folder = data_root / "mot17" / "MOT17-04-FRCNN" / "img1" if data_root else None
    if folder is None or not folder.is_dir() or models_root is None:
        pytest.skip("../shared/data or ../shared/models not found: set PEDSEARCH_PATHS__DATA_ROOT "
                    "and PEDSEARCH_PATHS__MODELS_ROOT")
    from workers.camera.sources import FileSource

    raw = settings.model_dump()
    raw["cameras"] = {"mot17": {"detector": {
        "type": "darknet", "cfg": "yolo-fastest-1.1-body/yolo-fastest-1.1_body.cfg",
        "weights": "yolo-fastest-1.1-body/yolo-fastest-1.1_body.weights",
        "models_root": str(models_root)}}}
    settings = type(settings).model_validate(raw)  # validated as a settings file is
    source = FileSource(path=folder, camera_id="mot17", fps=5.0, realtime=False)
    publisher = FramePublisher(producer=make_producer(settings.kafka),
                               topic=settings.kafka.frames_topic)
    for sf in source.frames(threading.Event()):
        publisher.publish(sf)
    publisher.close()
    assert publisher.stats.acked == 8
    results, _ = run_workers(settings)
    assert sum(r["frames"] for r in results) == 8
    rows = stored_rows(settings)
    # 8 frames of a crowded street: many confirmed tracks, each stored once (one window)
    assert len(rows) >= 20
    assert {r["camera_id"] for r in rows} == {"mot17"}


def test_in_process_embedding_drains_the_stream_into_milvus(ingest_settings_factory):
    # --embedders 0: each consumer embeds its own crops (no embedder actors, no object-store
    # hops), the configuration for a machine with a couple of cores
    settings = ingest_settings_factory()
    settings.workers.embedders = 0
    scene = dict(SCENE, cameras=2, duration_s=12.0)
    truth = publish_scene(settings, **scene)
    results, _ = run_workers(settings)
    assert sum(r["frames"] for r in results) == sum(len(v) for v in truth.values())
    rows = stored_rows(settings)
    assert rows, "nothing was stored"
    matches = match_truth(rows, truth)
    assert sum(m is not None for m in matches.values()) / len(matches) >= 0.8
    assert {m[0] for m in matches.values() if m} == set(truth)
