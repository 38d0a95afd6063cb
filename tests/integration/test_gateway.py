"""The gRPC gateway against the real embedded servers, over a scene ingested by the real workers.

A small synthetic scene goes camera -> Kafka-API broker -> Ray workers -> Milvus (+ crops, + the
Redis live feed) once per module; a real gRPC server on a free port answers every RPC. The
sections: end-to-end results of every RPC; a table of bad inputs with their exact status codes;
a hypothesis property test (never UNKNOWN or INTERNAL); standing queries (Watch) that receive a
person who appears after the query began; missing index / dead Milvus / dead Redis; auth, TLS,
rate limit; the ``pedsearch gateway serve`` command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from types import SimpleNamespace

import cv2
import grpc
import numpy as np
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st
from pymilvus import MilvusClient

from deploy.demo import person_of
from deploy.rollout import rollout, unstage
from gateway.server import create_server
from gateway.status import WATCH_DURATION_KEY, WATCH_MAX_KEY
from pedsearch.bundle import load_bundle
from pedsearch.config import ENV_PREFIX, Settings
from pedsearch.cropstore import CropStore
from pedsearch.errors import InvalidInput, NotReady
from pedsearch.fleet import Fleet
from pedsearch.live import LiveFeed
from pedsearch.schema import SCALAR_FIELDS, DetectionCollections, DetectionRow, collection_name
from pedsearch.synthetic.captions import describe
from pedsearch.v1 import search_pb2, search_pb2_grpc
from workers.camera.publisher import FramePublisher, make_producer
from workers.camera.sources import SyntheticSource
from workers.runtime import IngestWorkers

pytestmark = pytest.mark.integration

SCENE = dict(camera_id="gw", cameras=2, people=5, seed=3, fps=4.0, duration_s=12.0)
LATE_SCENE = dict(camera_id="late", cameras=1, people=3, seed=8, fps=4.0, duration_s=12.0)
CODE = grpc.StatusCode
RPC_TIMEOUT_S = 30


# ------------------------------------------------------------------------------------------------
# set-up
# ------------------------------------------------------------------------------------------------

def gateway_settings(servers, root, **gateway) -> Settings:
    """Settings pointing at the session's servers with names no other test uses."""
    name = f"gw_{uuid.uuid4().hex[:10]}"
    return Settings(
        kafka={"bootstrap_servers": servers.kafka, "frames_topic": f"{name}.frames",
               "dlq_topic": f"{name}.frames.dlq", "consumer_group": f"{name}.workers",
               "max_poll_interval_ms": 6000, "session_timeout_ms": 6000},
        milvus={"uri": servers.milvus, "alias": name, "collection_prefix": f"{name}_v"},
        redis={"url": servers.redis},
        stack={"data_dir": str(root / "stack")},
        paths={"crops_dir": str(root / "crops")},
        workers={"consumers": 1, "embedders": 1, "embed_batch": 16},
        model={"bundle": str(servers.bundle_path)},
        gateway={"rate_limit_per_s": 0, **gateway},
    )


def publish_scene(settings: Settings, scene: dict) -> dict[str, list]:
    """Publish a synthetic scene as fast as the broker takes it; returns per camera, per frame,
    the ``(person, box)`` pairs of its ground truth."""
    publisher = FramePublisher(producer=make_producer(settings.kafka),
                               topic=settings.kafka.frames_topic)
    truth: dict[str, list] = {}
    for sf in SyntheticSource(realtime=False, **scene).frames(threading.Event()):
        publisher.publish(sf)
        truth.setdefault(sf.camera_id, []).append(
            [(p.person_id, (p.box.x, p.box.y, p.box.w, p.box.h)) for p in sf.truth.people])
    publisher.close()
    assert publisher.stats.failed == 0
    return truth


def run_workers(settings: Settings) -> int:
    """The real ingest workers on Ray until the topic is drained; returns crops stored."""
    workers = IngestWorkers(settings)
    try:
        results = workers.run(threading.Event(), idle_exit_s=6.0)
    finally:
        workers.shutdown()
    return sum(r["crops"] for r in results)


def free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(address: str, credentials=None):
    channel = (grpc.secure_channel(address, credentials) if credentials is not None
               else grpc.insecure_channel(address))
    return channel, search_pb2_grpc.SearchStub(channel), health_pb2_grpc.HealthStub(channel)


def health_of(health_stub, service: str = "") -> str:
    resp = health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def code_of(call) -> grpc.StatusCode:
    """The status code of a unary call (OK when it succeeds)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return CODE.OK


def text_of(scene, pid: int) -> str:
    return describe(scene.person(pid).attributes, np.random.default_rng(pid))


@pytest.fixture(scope="module")
def servers(kafka_broker, milvus_server, redis_server, ray_local, ingest_bundle_path):
    """The session's servers and the bundle loaded once (all three query parts)."""
    with pytest.MonkeyPatch.context() as mp:  # nothing from the developer's shell
        for key in list(os.environ):
            if key.startswith(ENV_PREFIX) and not key.startswith("PEDSEARCH_TEST_"):
                mp.delenv(key)
        yield SimpleNamespace(kafka=kafka_broker, milvus=milvus_server, redis=redis_server,
                              bundle_path=ingest_bundle_path,
                              bundle=load_bundle(ingest_bundle_path))


@pytest.fixture(scope="module")
def indexed(servers, tmp_path_factory):
    """A scene ingested for real, and a gateway serving it."""
    settings = gateway_settings(servers, tmp_path_factory.mktemp("gateway"))
    truth = publish_scene(settings, SCENE)
    crops = run_workers(settings)
    assert crops > 0
    name = collection_name(settings.milvus, servers.bundle.version)
    client = MilvusClient(uri=settings.milvus.uri)
    rows = client.query(name, filter="id != 0", limit=16384, consistency_level="Strong",
                        output_fields=[*SCALAR_FIELDS, "embedding",
                                       *servers.bundle.schema.field_names()])
    client.close()
    # each stored vector is [joint embedding ; attribute-space vector] (VectorLayout): the
    # rows keep both, "embedding" the joint embedding alone
    for r in rows:
        r["vector"] = np.asarray(r["embedding"], np.float32)
        r["embedding"] = r["vector"][:servers.bundle.embed_dim]
    server = create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle).start()
    channel, stub, health = connect(server.address)
    # searches read with bounded staleness: wait until they see every stored row
    deadline = time.monotonic() + 30
    while True:
        n = len(stub.SearchText(search_pb2.SearchTextRequest(text="a person", top_k=1000),
                                timeout=RPC_TIMEOUT_S).hits)
        if n >= len(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    try:
        yield SimpleNamespace(
            settings=settings, server=server, stub=stub, health=health, rows=rows,
            truth=truth, scene=SyntheticSource(realtime=False, **SCENE).build_scene(),
            cameras=sorted(truth), version=servers.bundle.version, collection=name,
            bundle=servers.bundle,
        )
    finally:
        channel.close()
        server.stop(grace=1.0)


def people_in(truth) -> list[int]:
    """Scene people by how many frames show them, most first."""
    counts: dict[int, int] = {}
    for frames in truth.values():
        for frame in frames:
            for pid, _ in frame:
                counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts, key=lambda p: -counts[p])


# ------------------------------------------------------------------------------------------------
# every RPC, end to end
# ------------------------------------------------------------------------------------------------

def test_search_text_ranks_stored_detections_of_the_loaded_model(indexed):
    pid = people_in(indexed.truth)[0]
    resp = indexed.stub.SearchText(
        search_pb2.SearchTextRequest(text=text_of(indexed.scene, pid), top_k=5),
        timeout=RPC_TIMEOUT_S)
    assert len(resp.hits) == min(5, len(indexed.rows))
    assert resp.model_version == indexed.version and resp.collection == indexed.collection
    assert resp.encode_ms > 0 and resp.search_ms > 0
    scores = [h.score for h in resp.hits]
    assert scores == sorted(scores, reverse=True) and all(-1.01 <= s <= 1.01 for s in scores)
    stored = {r["id"] for r in indexed.rows}
    for hit in resp.hits:
        d = hit.detection
        assert d.model_version == indexed.version and d.id in stored
        assert d.camera_id in indexed.cameras and d.box.w > 0 and d.box.h > 0
        assert len(d.attributes) == indexed.bundle.schema.dim
        assert all(0.0 <= p <= 1.0 for p in d.attributes.values())
        assert "upper_color=red" in d.attributes
    # top_k 0 means 10
    resp = indexed.stub.SearchText(search_pb2.SearchTextRequest(text="a man"),
                                   timeout=RPC_TIMEOUT_S)
    assert len(resp.hits) == min(10, len(indexed.rows))


def test_stored_vectors_carry_the_attribute_space_of_their_predicted_attributes(indexed):
    schema, d = indexed.bundle.schema, indexed.bundle.embed_dim
    space = schema.attribute_space(np.array([[r[f] for f in schema.field_names()]
                                             for r in indexed.rows]))
    for r, a in zip(indexed.rows, space):
        assert r["vector"].shape == (d + schema.dim,)
        assert np.linalg.norm(r["embedding"]) == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(r["vector"][d:], a, atol=1e-5)


def test_search_text_scores_by_latent_plus_attribute_similarity(indexed):
    """CMAAM Eq. 19 as the gateway serves it: (cosine + w * S_a) / (1 + w) of the caption and
    each stored detection, S_a from both towers' predicted attributes."""
    schema, bundle = indexed.bundle.schema, indexed.bundle
    assert indexed.settings.gateway.text_attribute_weight is None  # the bundle's own choice
    w = bundle.text_attribute_weight  # 1 for the shipped bundle; 0 leaves the cosine
    text = text_of(indexed.scene, people_in(indexed.truth)[0])
    emb, probs = bundle.encode_texts_with_attributes([text])
    stored = schema.attribute_space(np.array([[r[f] for f in schema.field_names()]
                                              for r in indexed.rows]))
    s_a = stored @ schema.attribute_space(probs)[0]
    s_l = np.array([r["embedding"] for r in indexed.rows], np.float32) @ emb[0]
    expected = {r["id"]: (float(l) + w * float(a)) / (1 + w)
                for r, l, a in zip(indexed.rows, s_l, s_a)}
    resp = indexed.stub.SearchText(search_pb2.SearchTextRequest(text=text, top_k=1000),
                                   timeout=RPC_TIMEOUT_S)
    assert {h.detection.id for h in resp.hits} == set(expected)
    for h in resp.hits:
        assert h.score == pytest.approx(expected[h.detection.id], abs=1e-3)
    # the index searches that score itself: a short list is the best of every row by it, not a
    # re-ranking of the best cosines
    top = indexed.stub.SearchText(search_pb2.SearchTextRequest(text=text, top_k=3),
                                  timeout=RPC_TIMEOUT_S).hits
    assert [h.score for h in top] == pytest.approx(
        sorted(expected.values(), reverse=True)[:3], abs=1e-3)
    for h in top:
        assert h.score == pytest.approx(expected[h.detection.id], abs=1e-3)


def test_camera_time_and_score_filters_are_respected(indexed):
    # the filters run on the scalar indexes: seal the rows and wait until they are indexed
    client = MilvusClient(uri=indexed.settings.milvus.uri)
    client.flush(indexed.collection)
    info = DetectionCollections(client, indexed.settings.milvus).wait_indexed(
        indexed.collection, len(indexed.rows), timeout_s=60)
    client.close()
    assert info["camera_id"]["index_type"] == "Trie" and info["ts_us"]["index_type"] == "STL_SORT"
    cam = indexed.cameras[1]
    ts = sorted(r["ts_us"] for r in indexed.rows)
    since, until = ts[len(ts) // 4], ts[3 * len(ts) // 4]
    resp = indexed.stub.SearchText(search_pb2.SearchTextRequest(
        text="a person walking", top_k=1000,
        filter=search_pb2.Filter(camera_ids=[cam], since_us=since, until_us=until)),
        timeout=RPC_TIMEOUT_S)
    expected = {r["id"] for r in indexed.rows
                if r["camera_id"] == cam and since <= r["ts_us"] <= until}
    assert {h.detection.id for h in resp.hits} == expected
    everything = indexed.stub.SearchText(
        search_pb2.SearchTextRequest(text="a person walking", top_k=1000), timeout=RPC_TIMEOUT_S)
    cut = sorted(h.score for h in everything.hits)[len(everything.hits) // 2]
    resp = indexed.stub.SearchText(search_pb2.SearchTextRequest(
        text="a person walking", top_k=1000, filter=search_pb2.Filter(min_score=cut)),
        timeout=RPC_TIMEOUT_S)
    assert resp.hits and all(h.score >= cut for h in resp.hits)
    assert len(resp.hits) == sum(h.score >= cut for h in everything.hits)


def test_hard_constraints_filter_and_soft_constraints_rerank_by_the_documented_formula(indexed):
    schema = indexed.bundle.schema
    # the value most stored people are predicted to have, so the filter keeps some and drops some
    field = max(schema.field_names(),
                key=lambda f: -abs(np.mean([r[f] >= 0.5 for r in indexed.rows]) - 0.5))
    family, value = next((fam.name, v) for fam in schema.families for v in fam.values
                         if f"attr_{fam.name}_{v}" == field)
    hard = search_pb2.AttributeConstraint(family=family, values=[value],
                                          mode=search_pb2.AttributeConstraint.HARD,
                                          min_probability=0.5)
    resp = indexed.stub.SearchText(search_pb2.SearchTextRequest(
        text="a person", top_k=1000, constraints=[hard]), timeout=RPC_TIMEOUT_S)
    assert {h.detection.id for h in resp.hits} == {r["id"] for r in indexed.rows
                                                   if r[field] >= 0.5}
    # SOFT: score = text score + soft_weight * P(value), re-ranked
    raw = {h.detection.id: h.score for h in indexed.stub.SearchText(
        search_pb2.SearchTextRequest(text="a person", top_k=1000), timeout=RPC_TIMEOUT_S).hits}
    soft = search_pb2.AttributeConstraint(family=family, values=[value],
                                          mode=search_pb2.AttributeConstraint.SOFT)
    resp = indexed.stub.SearchText(search_pb2.SearchTextRequest(
        text="a person", top_k=5, constraints=[soft]), timeout=RPC_TIMEOUT_S)
    w = indexed.settings.gateway.soft_weight
    key = f"{family}={value}"
    for h in resp.hits:
        assert h.score == pytest.approx(raw[h.detection.id] + w * h.detection.attributes[key],
                                        abs=1e-4)
    assert [h.score for h in resp.hits] == sorted((h.score for h in resp.hits), reverse=True)
    best = sorted((raw[i] + w * next(r[field] for r in indexed.rows if r["id"] == i)
                   for i in raw), reverse=True)[:5]
    assert [h.score for h in resp.hits] == pytest.approx(best, abs=1e-4)


def test_search_attributes_of_a_scene_person(indexed):
    pid = people_in(indexed.truth)[0]
    attrs = indexed.scene.person(pid).attributes
    constraints = [search_pb2.AttributeConstraint(
        family=f, values=list(attrs[f]) if isinstance(attrs[f], (list, tuple)) else [attrs[f]])
        for f in ("gender", "upper_color", "lower_color")]
    resp = indexed.stub.SearchAttributes(search_pb2.SearchAttributesRequest(
        constraints=constraints, top_k=3, filter=search_pb2.Filter(camera_ids=indexed.cameras)),
        timeout=RPC_TIMEOUT_S)
    assert len(resp.hits) == min(3, len(indexed.rows))
    assert all(h.detection.model_version == indexed.version for h in resp.hits)
    # the attribute query is its own embedding, not the text one: different ranking scores
    text = indexed.stub.SearchText(search_pb2.SearchTextRequest(text="a person", top_k=3),
                                   timeout=RPC_TIMEOUT_S)
    assert [h.score for h in resp.hits] != [h.score for h in text.hits]


def test_an_attribute_constraints_values_are_alternatives(indexed):
    # footwear boots or sneakers: two concepts searched at once, each hit scored by its best.
    # A HARD constraint with a tiny threshold keeps every row and adds no re-ranking bonus, so
    # the scores are the concepts' cosines alone
    def scores(*values):
        c = search_pb2.AttributeConstraint(
            family="footwear", values=list(values), min_probability=1e-9,
            mode=search_pb2.AttributeConstraint.HARD)
        resp = indexed.stub.SearchAttributes(search_pb2.SearchAttributesRequest(
            constraints=[c], top_k=len(indexed.rows)), timeout=RPC_TIMEOUT_S)
        return {h.detection.id: h.score for h in resp.hits}

    boots, sneakers, either = scores("boots"), scores("sneakers"), scores("boots", "sneakers")
    assert len(either) == len(boots) == len(sneakers) > 1
    assert boots != sneakers
    for i, score in either.items():
        assert score == pytest.approx(max(boots[i], sneakers[i]), abs=1e-5)


def test_get_detection_and_search_by_its_crop(indexed):
    hit = indexed.stub.SearchText(search_pb2.SearchTextRequest(text="a person", top_k=1),
                                  timeout=RPC_TIMEOUT_S).hits[0]
    got = indexed.stub.GetDetection(search_pb2.GetDetectionRequest(
        id=hit.detection.id, include_crop=True), timeout=RPC_TIMEOUT_S)
    assert got.detection == hit.detection
    assert got.crop_jpeg[:2] == b"\xff\xd8"
    crop = cv2.imdecode(np.frombuffer(got.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None and crop.shape[0] >= 16
    without = indexed.stub.GetDetection(search_pb2.GetDetectionRequest(id=hit.detection.id),
                                        timeout=RPC_TIMEOUT_S)
    assert without.crop_jpeg == b"" and without.detection.id == hit.detection.id
    # the stored crop, sent back as a JPEG and as a PNG, finds itself first
    ok, png = cv2.imencode(".png", crop)
    for image in (got.crop_jpeg, png.tobytes()):
        resp = indexed.stub.SearchImage(search_pb2.SearchImageRequest(image=image, top_k=3),
                                        timeout=RPC_TIMEOUT_S)
        assert resp.hits[0].detection.id == hit.detection.id
        assert resp.hits[0].score > 0.9
        assert resp.model_version == indexed.version


def test_list_cameras_lists_the_scene_cameras(indexed):
    resp = indexed.stub.ListCameras(search_pb2.ListCamerasRequest(), timeout=RPC_TIMEOUT_S)
    assert resp.model_version == indexed.version
    listed = {c.camera_id: c for c in resp.cameras}
    assert set(indexed.cameras) <= set(listed)
    for cam in indexed.cameras:
        rows = [r for r in indexed.rows if r["camera_id"] == cam]
        info = listed[cam]
        assert info.detections >= len(rows) > 0
        assert info.first_ts_us <= min(r["ts_us"] for r in rows)
        assert info.last_ts_us >= max(r["ts_us"] for r in rows)


def test_reflection_lists_the_services(indexed):
    channel = grpc.insecure_channel(indexed.server.address)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    channel.close()
    assert {"pedsearch.v1.Search", "grpc.health.v1.Health"} <= names
    assert health_of(indexed.health, "pedsearch.v1.Search") == "SERVING"


# ------------------------------------------------------------------------------------------------
# bad input: exact status codes, and the server stays up
# ------------------------------------------------------------------------------------------------

AC = search_pb2.AttributeConstraint
GOOD_C = AC(family="upper_color", values=["red"])
NAN = float("nan")


def _watch_first(stub, req, timeout=RPC_TIMEOUT_S):
    call = stub.Watch(req, timeout=timeout)
    try:
        return next(call)
    finally:
        call.cancel()


BAD_INPUTS = {
    # SearchText
    "text empty": ("SearchText", search_pb2.SearchTextRequest(text=""), CODE.INVALID_ARGUMENT),
    "text blank": ("SearchText", search_pb2.SearchTextRequest(text=" \t\n"),
                   CODE.INVALID_ARGUMENT),
    "text no words": ("SearchText", search_pb2.SearchTextRequest(text="!!! ???"),
                      CODE.INVALID_ARGUMENT),
    "text too long": ("SearchText", search_pb2.SearchTextRequest(text="red " * 300),
                      CODE.INVALID_ARGUMENT),
    "top_k 1001": ("SearchText", search_pb2.SearchTextRequest(text="a man", top_k=1001),
                   CODE.INVALID_ARGUMENT),
    "top_k huge": ("SearchText", search_pb2.SearchTextRequest(text="a man", top_k=2**32 - 1),
                   CODE.INVALID_ARGUMENT),
    "time inverted": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", filter=search_pb2.Filter(since_us=10, until_us=9)), CODE.INVALID_ARGUMENT),
    "camera id bad": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", filter=search_pb2.Filter(camera_ids=['cam" or 1==1'])),
        CODE.INVALID_ARGUMENT),
    "camera id empty": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", filter=search_pb2.Filter(camera_ids=[""])), CODE.INVALID_ARGUMENT),
    # "$" matched before a final newline: the id reached Milvus, whose parser failed on it
    "camera id newline": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", filter=search_pb2.Filter(camera_ids=["gate-3\n"])),
        CODE.INVALID_ARGUMENT),
    "min_score nan": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", filter=search_pb2.Filter(min_score=NAN)), CODE.INVALID_ARGUMENT),
    "min_score inf": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", filter=search_pb2.Filter(min_score=float("inf"))), CODE.INVALID_ARGUMENT),
    "unknown family": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", constraints=[AC(family="wings", values=["yes"])]), CODE.INVALID_ARGUMENT),
    "unknown value": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", constraints=[AC(family="upper_color", values=["plaid"])]),
        CODE.INVALID_ARGUMENT),
    "no values": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", constraints=[AC(family="upper_color")]), CODE.INVALID_ARGUMENT),
    "min_probability 0": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", constraints=[AC(family="backpack", values=["yes"], mode=AC.HARD,
                                      min_probability=0.0)]), CODE.INVALID_ARGUMENT),
    "min_probability 1.5": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", constraints=[AC(family="backpack", values=["yes"], mode=AC.HARD,
                                      min_probability=1.5)]), CODE.INVALID_ARGUMENT),
    "min_probability nan": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", constraints=[AC(family="backpack", values=["yes"], mode=AC.HARD,
                                      min_probability=NAN)]), CODE.INVALID_ARGUMENT),
    "mode unknown": ("SearchText", search_pb2.SearchTextRequest(
        text="a man", constraints=[AC(family="backpack", values=["yes"], mode=7)]),
        CODE.INVALID_ARGUMENT),
    "deadline passed": ("SearchText", search_pb2.SearchTextRequest(text="a man"),
                        CODE.DEADLINE_EXCEEDED),
    # SearchAttributes
    "attrs none": ("SearchAttributes", search_pb2.SearchAttributesRequest(),
                   CODE.INVALID_ARGUMENT),
    "attrs unknown family": ("SearchAttributes", search_pb2.SearchAttributesRequest(
        constraints=[AC(family="gendre", values=["male"])]), CODE.INVALID_ARGUMENT),
    # one constraint's values are alternatives ("male or female"); two constraints must both hold
    "attrs contradicting": ("SearchAttributes", search_pb2.SearchAttributesRequest(
        constraints=[AC(family="gender", values=["male"]), AC(family="gender", values=["female"])]),
        CODE.INVALID_ARGUMENT),
    "attrs too many alternatives": ("SearchAttributes", search_pb2.SearchAttributesRequest(
        constraints=[AC(family="upper_color", values=["red", "blue", "black", "white", "gray"]),
                     AC(family="lower_color", values=["red", "blue", "black", "white", "gray"])]),
        CODE.INVALID_ARGUMENT),
    "attrs top_k": ("SearchAttributes", search_pb2.SearchAttributesRequest(
        constraints=[GOOD_C], top_k=5000), CODE.INVALID_ARGUMENT),
    "attrs time": ("SearchAttributes", search_pb2.SearchAttributesRequest(
        constraints=[GOOD_C], filter=search_pb2.Filter(since_us=5, until_us=-5)),
        CODE.INVALID_ARGUMENT),
    # SearchImage
    "image empty": ("SearchImage", search_pb2.SearchImageRequest(), CODE.INVALID_ARGUMENT),
    "image garbage": ("SearchImage", search_pb2.SearchImageRequest(image=b"GIF89a" + bytes(99)),
                      CODE.INVALID_ARGUMENT),
    "image truncated jpeg": ("SearchImage", search_pb2.SearchImageRequest(
        image=b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"), CODE.INVALID_ARGUMENT),
    "image corrupt png": ("SearchImage", search_pb2.SearchImageRequest(
        image=b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00\x00\x01\x00" * 2
        + bytes(64)), CODE.INVALID_ARGUMENT),
    "image bomb": ("SearchImage", search_pb2.SearchImageRequest(
        image=b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00\x01\x00\x00" * 2
        + bytes(64)), CODE.INVALID_ARGUMENT),
    "image too big": ("SearchImage", search_pb2.SearchImageRequest(
        image=b"\xff\xd8" + bytes(8 * 1024 * 1024)), CODE.INVALID_ARGUMENT),
    "image top_k": ("SearchImage", search_pb2.SearchImageRequest(image=b"x", top_k=1001),
                    CODE.INVALID_ARGUMENT),
    # GetDetection / ListCameras
    "unknown id": ("GetDetection", search_pb2.GetDetectionRequest(id=12345), CODE.NOT_FOUND),
    "negative id": ("GetDetection", search_pb2.GetDetectionRequest(id=-(2**63)),
                    CODE.NOT_FOUND),
    "image deadline": ("SearchImage", search_pb2.SearchImageRequest(
        image=cv2.imencode(".jpg", np.full((256, 128, 3), 90, np.uint8))[1].tobytes()),
        CODE.DEADLINE_EXCEEDED),
    # Watch
    "watch no query": ("Watch", search_pb2.WatchRequest(threshold=0.5), CODE.INVALID_ARGUMENT),
    "watch empty text": ("Watch", search_pb2.WatchRequest(text="", threshold=0.5),
                         CODE.INVALID_ARGUMENT),
    "watch nan": ("Watch", search_pb2.WatchRequest(text="a man", threshold=NAN),
                  CODE.INVALID_ARGUMENT),
    "watch inf": ("Watch", search_pb2.WatchRequest(text="a man", threshold=float("-inf")),
                  CODE.INVALID_ARGUMENT),
    "watch no constraints": ("Watch", search_pb2.WatchRequest(
        attributes=search_pb2.AttributeQuery(), threshold=0.5), CODE.INVALID_ARGUMENT),
    "watch bad value": ("Watch", search_pb2.WatchRequest(
        attributes=search_pb2.AttributeQuery(constraints=[AC(family="hat", values=["maybe"])]),
        threshold=0.5), CODE.INVALID_ARGUMENT),
    "watch bad camera": ("Watch", search_pb2.WatchRequest(
        text="a man", threshold=0.5, filter=search_pb2.Filter(camera_ids=["-x"])),
        CODE.INVALID_ARGUMENT),
    "watch camera newline": ("Watch", search_pb2.WatchRequest(
        text="a man", threshold=0.5, filter=search_pb2.Filter(camera_ids=["gate-3\n"])),
        CODE.INVALID_ARGUMENT),
    # a watch sees only detections indexed from now on: a range that has ended never matches
    "watch until past": ("Watch", search_pb2.WatchRequest(
        text="a man", threshold=0.5, filter=search_pb2.Filter(until_us=1)),
        CODE.INVALID_ARGUMENT),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_its_exact_status_and_the_server_stays_up(indexed, case):
    method, request, expected = BAD_INPUTS[case]
    # 2 ms: far less than encoding a query takes, so the answer cannot be ready in time
    timeout = 0.002 if expected == CODE.DEADLINE_EXCEEDED else RPC_TIMEOUT_S
    if method == "Watch":
        code = code_of(lambda: _watch_first(indexed.stub, request, timeout))
    else:
        code = code_of(lambda: getattr(indexed.stub, method)(request, timeout=timeout))
    assert code == expected, case
    assert health_of(indexed.health) == "SERVING"


def test_error_messages_say_what_is_wrong(indexed):
    with pytest.raises(grpc.RpcError) as err:
        indexed.stub.SearchText(search_pb2.SearchTextRequest(
            text="a man", constraints=[AC(family="upper_color", values=["plaid"])]),
            timeout=RPC_TIMEOUT_S)
    assert "plaid" in err.value.details() and "upper_color" in err.value.details()
    assert "known:" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        indexed.stub.SearchText(search_pb2.SearchTextRequest(text="a", top_k=1001),
                                timeout=RPC_TIMEOUT_S)
    assert "top_k must be 1..1000" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        indexed.stub.GetDetection(search_pb2.GetDetectionRequest(id=777), timeout=RPC_TIMEOUT_S)
    assert "777" in err.value.details()


# ------------------------------------------------------------------------------------------------
# property: arbitrary request fields never make UNKNOWN or INTERNAL
# ------------------------------------------------------------------------------------------------

SCHEMA_WORDS = ["gender", "upper_color", "lower_color", "backpack", "hat", "red", "grey", "yes",
                "no", "female", "male", "blue", "black"]
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
texts = st.one_of(st.text(max_size=60), st.text(min_size=950, max_size=1100),
                  st.sampled_from(["a woman in a red coat", "man with backpack", "", "   "]))
cameras = st.lists(st.one_of(st.text(max_size=70), st.sampled_from(["gw-0", "gw-1", "late-0"])),
                   max_size=4)
times = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
constraint = st.builds(
    lambda fam, vals, mode, prob: AC(family=fam, values=vals, mode=mode,
                                     **({} if prob is None else {"min_probability": prob})),
    st.one_of(st.sampled_from(SCHEMA_WORDS), st.text(max_size=20)),
    st.lists(st.one_of(st.sampled_from(SCHEMA_WORDS), st.text(max_size=12)), max_size=4),
    st.integers(0, 4), st.one_of(st.none(), floats))


@st.composite
def filters(draw):
    kw = {"camera_ids": draw(cameras)}
    for key, strat in (("since_us", times), ("until_us", times),
                       ("min_score", st.one_of(st.none(), floats))):
        value = draw(strat)
        if value is not None:
            kw[key] = value
    return search_pb2.Filter(**kw)


def _jpeg_like(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (int(rng.integers(8, 80)), int(rng.integers(8, 60)), 3), np.uint8)
    data = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    for _ in range(int(rng.integers(0, 4))):  # corrupt a few bytes, sometimes
        data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
    return bytes(data)


images = st.one_of(st.binary(max_size=300), st.integers(0, 10_000).map(_jpeg_like))
top_ks = st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1))

requests = st.one_of(
    st.builds(lambda t, k, f, c: ("SearchText", search_pb2.SearchTextRequest(
        text=t, top_k=k, filter=f, constraints=c)), texts, top_ks, filters(),
        st.lists(constraint, max_size=3)),
    st.builds(lambda c, k, f: ("SearchAttributes", search_pb2.SearchAttributesRequest(
        constraints=c, top_k=k, filter=f)), st.lists(constraint, max_size=3), top_ks, filters()),
    st.builds(lambda i, k, f, c: ("SearchImage", search_pb2.SearchImageRequest(
        image=i, top_k=k, filter=f, constraints=c)), images, top_ks, filters(),
        st.lists(constraint, max_size=2)),
    st.builds(lambda i, c: ("GetDetection", search_pb2.GetDetectionRequest(
        id=i, include_crop=c)), st.integers(-(2**63), 2**63 - 1), st.booleans()),
    st.just(("ListCameras", search_pb2.ListCamerasRequest())),
    st.builds(lambda t, th, f, m, d: ("Watch", search_pb2.WatchRequest(
        text=t, threshold=th, filter=f, max_matches=m, max_duration_s=d)),
        texts, floats, filters(), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(lambda c, th: ("Watch", search_pb2.WatchRequest(
        attributes=search_pb2.AttributeQuery(constraints=c), threshold=th)),
        st.lists(constraint, max_size=3), floats),
    st.builds(lambda i, th: ("Watch", search_pb2.WatchRequest(image=i, threshold=th)),
              images, floats),
)


@hyp_settings(max_examples=120, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests)
def test_arbitrary_requests_never_get_unknown_or_internal(indexed, request):
    method, msg = request
    if method == "Watch":
        code = code_of(lambda: _watch_first(indexed.stub, msg))
    else:
        code = code_of(lambda: getattr(indexed.stub, method)(msg, timeout=RPC_TIMEOUT_S))
    assert code in (CODE.OK, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND), (method, msg, code)


# ------------------------------------------------------------------------------------------------
# Watch
# ------------------------------------------------------------------------------------------------

class WatchReader:
    """Reads a Watch stream on a thread: events into a queue, the final status at the end."""

    def __init__(self, stub, request, timeout: float = 180) -> None:
        self.call = stub.Watch(request, timeout=timeout)
        self.events: queue.Queue = queue.Queue()
        self.code: grpc.StatusCode | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
            self.code = CODE.OK
        except grpc.RpcError as exc:
            self.code = exc.code()

    def next(self, timeout: float = 30):
        return self.events.get(timeout=timeout)

    def matches_until(self, done, timeout: float) -> list:
        out, end = [], time.monotonic() + timeout
        while time.monotonic() < end and not done(out):
            try:
                event = self.next(timeout=max(0.05, end - time.monotonic()))
            except queue.Empty:
                break
            if event.WhichOneof("event") == "match":
                out.append(event.match)
        return out


def stored_rows_as_detections(indexed) -> list[DetectionRow]:
    schema_fields = indexed.bundle.schema.field_names()
    return [DetectionRow(
        id=r["id"], camera_id=r["camera_id"], ts_us=r["ts_us"], track_id=r["track_id"],
        frame_seq=r["frame_seq"], box=(r["box_x"], r["box_y"], r["box_w"], r["box_h"]),
        det_score=r["det_score"], crop_ref=r["crop_ref"], model_version=r["model_version"],
        embedding=np.asarray(r["embedding"], np.float32),
        attributes=np.asarray([r[f] for f in schema_fields], np.float32),
    ) for r in indexed.rows]


def test_watch_receives_a_person_who_appears_after_the_query_began(indexed):
    late_scene = SyntheticSource(realtime=False, **LATE_SCENE).build_scene()
    # the person described: one of the late scene's, absent from everything stored so far
    text = text_of(late_scene, 0)
    # threshold from the data: the median score this text gets among the stored (other) people
    stored = indexed.stub.SearchText(search_pb2.SearchTextRequest(text=text, top_k=1000),
                                     timeout=RPC_TIMEOUT_S)
    threshold = float(np.median([h.score for h in stored.hits]))
    late_cams = [f"{LATE_SCENE['camera_id']}-{i}" for i in range(LATE_SCENE["cameras"])]
    reader = WatchReader(indexed.stub, search_pb2.WatchRequest(
        text=text, threshold=threshold, filter=search_pb2.Filter(camera_ids=late_cams)))
    first = reader.next()
    assert first.WhichOneof("event") == "heartbeat" and first.heartbeat.scanned == 0
    try:
        # the person appears only now: new frames through the real workers
        publish_scene(indexed.settings, LATE_SCENE)
        assert run_workers(indexed.settings) > 0
        matches = reader.matches_until(lambda m: len(m) >= 1, timeout=60)
    finally:
        reader.call.cancel()
    assert matches, "no match arrived for the person who appeared after the watch began"
    old = {r["id"] for r in indexed.rows}
    for m in matches:
        assert m.detection.camera_id in late_cams and m.detection.id not in old
        assert m.score >= threshold and m.detection.model_version == indexed.version


def test_watch_by_an_example_crop_tells_when_that_person_appears_again(indexed):
    """"Tell me when this person shows up again": a Watch whose query is a stored crop of one
    person, skipping the crop's own track, matches that person's detections on other tracks
    and no one else's."""
    rows = stored_rows_as_detections(indexed)
    who = {r.id: person_of(SimpleNamespace(camera_id=r.camera_id, frame_seq=r.frame_seq,
                                           box=r.box), indexed.truth) for r in rows}

    def track(r):
        return r.camera_id, int(r.track_id)

    for example in rows:  # a person the model tells from everyone else, seen on two tracks
        pid = who[example.id]
        if pid is None:
            continue
        crop = indexed.stub.GetDetection(search_pb2.GetDetectionRequest(
            id=example.id, include_crop=True), timeout=RPC_TIMEOUT_S).crop_jpeg
        scores = {h.detection.id: h.score for h in indexed.stub.SearchImage(
            search_pb2.SearchImageRequest(image=crop, top_k=1000), timeout=RPC_TIMEOUT_S).hits}
        threshold = max(scores[r.id] for r in rows if who[r.id] != pid) + 0.01
        # with a margin: Milvus's scores and the watch's own inner products may differ a little
        again = {r.id for r in rows if who[r.id] == pid and track(r) != track(example)
                 and scores[r.id] > threshold + 0.01}
        if again:
            break
    else:
        pytest.fail("no stored crop scores its person's other tracks above everyone else")
    feed = LiveFeed(redis.Redis.from_url(indexed.settings.redis.url),
                    indexed.settings.milvus.alias)
    cam, track_id = track(example)
    reader = WatchReader(indexed.stub, search_pb2.WatchRequest(
        image=crop, threshold=threshold, filter=search_pb2.Filter(camera_ids=indexed.cameras),
        skip_tracks=[search_pb2.TrackRef(camera_id=cam, track_id=track_id)]))
    assert reader.next().WhichOneof("event") == "heartbeat"
    try:
        feed.publish(rows)  # everyone shows up (again), the example's own track included
        matches = reader.matches_until(
            lambda m: again <= {x.detection.id for x in m}, timeout=30)
        time.sleep(1.0)  # a wrong match would come right after the last right one
        matches += reader.matches_until(lambda m: False, timeout=1.0)
    finally:
        reader.call.cancel()
    got = {m.detection.id for m in matches}
    assert again <= got and {who[i] for i in got} == {pid}
    assert not [m for m in matches if (m.detection.camera_id, m.detection.track_id) == (
        cam, track_id)]  # its own track, the example itself included, is skipped
    assert all(m.score >= threshold for m in matches)
    # an example that is no image, or a skip with no camera, is refused like SearchImage's
    for bad in (search_pb2.WatchRequest(image=b"GIF89a" + bytes(99), threshold=0.5),
                search_pb2.WatchRequest(image=crop, threshold=0.5,
                                        skip_tracks=[search_pb2.TrackRef(track_id=1)])):
        assert code_of(lambda: _watch_first(indexed.stub, bad)) == CODE.INVALID_ARGUMENT


def test_watch_ends_after_max_matches_and_each_id_comes_once(indexed):
    # stored rows written to the feed again, as the indexer does after a replayed write
    stored = stored_rows_as_detections(indexed)
    assert len(stored) >= 2
    rows, extra = stored[: min(6, len(stored) - 1)], stored[min(6, len(stored) - 1)]
    feed = LiveFeed(redis.Redis.from_url(indexed.settings.redis.url),
                    indexed.settings.milvus.alias)
    reader = WatchReader(indexed.stub, search_pb2.WatchRequest(
        text="a person", threshold=-2.0, max_matches=len(rows) + 1,
        filter=search_pb2.Filter(camera_ids=indexed.cameras)))
    assert reader.next().WhichOneof("event") == "heartbeat"
    feed.publish(rows)
    feed.publish(rows)  # the same ids with the same scores: not yielded again
    matches = reader.matches_until(lambda m: len(m) >= len(rows), timeout=30)
    assert sorted(m.detection.id for m in matches) == sorted(r.id for r in rows)
    # one more new id reaches max_matches: the server ends the stream with OK
    feed.publish([extra])
    reader.thread.join(timeout=30)
    assert reader.code == CODE.OK
    rest = []
    while not reader.events.empty():
        rest.append(reader.events.get_nowait())
    assert [e.match.detection.id for e in rest if e.WhichOneof("event") == "match"] == [extra.id]


def test_watch_ends_cleanly_when_the_client_cancels(indexed):
    service = indexed.server.service
    before = service.watches.open
    reader = WatchReader(indexed.stub, search_pb2.WatchRequest(text="a man", threshold=0.99))
    assert reader.next().WhichOneof("event") == "heartbeat"
    assert service.watches.open == before + 1
    reader.call.cancel()
    reader.thread.join(timeout=10)
    assert reader.code == CODE.CANCELLED
    deadline = time.monotonic() + 10  # the server notices within a feed read (1 s)
    while service.watches.open > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.watches.open == before
    assert health_of(indexed.health) == "SERVING"


def test_a_watch_is_told_its_duration_and_ends_cleanly_when_it_runs_out(indexed):
    """The stream's initial metadata says how long it runs and the gateway's cap (a longer
    max_duration_s is cut to it), so a client can say why a stream that simply ended did."""
    cap = indexed.server.service.cfg.watch_max_s
    short = WatchReader(indexed.stub, search_pb2.WatchRequest(text="a man", threshold=0.99,
                                                              max_duration_s=1))
    assert short.next().WhichOneof("event") == "heartbeat"
    meta = dict(short.call.initial_metadata())
    assert (meta[WATCH_DURATION_KEY], meta[WATCH_MAX_KEY]) == ("1", str(cap))
    short.thread.join(timeout=15)
    assert short.code == CODE.OK
    long = WatchReader(indexed.stub, search_pb2.WatchRequest(text="a man", threshold=0.99,
                                                             max_duration_s=cap + 1))
    try:
        assert long.next().WhichOneof("event") == "heartbeat"
        assert dict(long.call.initial_metadata())[WATCH_DURATION_KEY] == str(cap)
    finally:
        long.call.cancel()


# ------------------------------------------------------------------------------------------------
# no index, dead Milvus, dead Redis, watch limit, shutdown
# ------------------------------------------------------------------------------------------------

def _bundle_copy(src, dst, version: str):
    """The bundle at ``src`` under another model version (the same weights): a stand-in for a
    retrained bundle, enough to tell which version answered."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "bundle.json").read_text())
    (dst / "bundle.json").write_text(json.dumps({**manifest, "version": version}))
    return dst


def test_rollout_moves_queries_to_the_new_version_and_none_fails(indexed, servers, tmp_path):
    """The roll-out order of deploy/rollout.py against a gateway started with the old version
    only: the bundle staged (the gateway loads it, no restart), the copy, the atomic alias
    switch once the gateway reports the new version; a client searching all along never gets
    an error."""
    settings = gateway_settings(servers, tmp_path)
    settings.paths.crops_dir = indexed.settings.paths.crops_dir  # the indexed crops
    schema = servers.bundle.schema
    client = MilvusClient(uri=settings.milvus.uri)
    cols = DetectionCollections(client, settings.milvus)
    old = cols.ensure(servers.bundle.version, embed_dim=servers.bundle.embed_dim,
                      attributes=schema)  # no alias yet: it points here
    rows = stored_rows_as_detections(indexed)
    cols.upsert(old, rows, schema)
    new_version = f"vNew_{uuid.uuid4().hex[:8]}"
    new_path = _bundle_copy(servers.bundle_path, tmp_path / "new-bundle", new_version)
    fleet = Fleet(redis.Redis.from_url(servers.redis), settings.milvus.alias)
    versions, failures, stop = [], [], threading.Event()
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        assert [g.versions for g in fleet.gateways()] == [[servers.bundle.version]]
        channel, stub, _health = connect(server.address)
        req = search_pb2.SearchTextRequest(text="a person", top_k=1000)
        deadline = time.monotonic() + 30  # bounded staleness: until every row is seen
        while len(stub.SearchText(req, timeout=RPC_TIMEOUT_S).hits) < len(rows):
            assert time.monotonic() < deadline
            time.sleep(0.5)

        def search_all_along():
            while not stop.is_set():
                try:
                    resp = stub.SearchText(req, timeout=RPC_TIMEOUT_S)
                    versions.append((resp.model_version, len(resp.hits)))
                except grpc.RpcError as exc:
                    failures.append((exc.code(), exc.details()))

        crops, new_bundle = CropStore(settings.paths.crops_dir), load_bundle(new_path,
                                                                            parts=("image",))
        # the bundle staged and the long copy, the alias left alone (README's step 1)
        first = rollout(cols, crops, new_bundle, fleet=fleet, bundle_path=str(new_path),
                        switch=False)
        assert not first.switched and cols.resolve_alias() == old
        assert first.stats.copied == len(rows) and first.stats.missing_crop == 0
        assert fleet.staged() == {new_version: str(new_path)}
        # a crop store that is not there: refused before anything is copied or switched
        with pytest.raises(NotReady, match="is not a folder here"):
            rollout(cols, CropStore(tmp_path / "no-crops"), new_bundle)
        assert cols.resolve_alias() == old
        # the old workers then rewrite one detection with a later crop (its window's best)
        later = dataclasses.replace(rows[0], ts_us=rows[0].ts_us + 1)
        cols.upsert(old, [later], schema)
        searcher = threading.Thread(target=search_all_along)
        searcher.start()
        try:
            report = rollout(cols, crops, new_bundle, fleet=fleet, bundle_path=str(new_path))
            deadline = time.monotonic() + 30
            while not versions or versions[-1] != (new_version, len(rows)):
                assert time.monotonic() < deadline, versions[-3:]
                time.sleep(0.2)
        finally:
            stop.set()
            searcher.join()
        assert failures == []
        assert versions[0][0] == servers.bundle.version and versions[-1][0] == new_version
        assert report.previous == old and report.switched
        # the switch waited for the gateway, which had loaded the staged bundle by itself
        assert [g.versions for g in report.gateways] == [[servers.bundle.version, new_version]]
        assert stub.ListCameras(search_pb2.ListCamerasRequest(),
                                timeout=RPC_TIMEOUT_S).model_version == new_version
        # only the rewritten detection was copied again
        assert (report.stats.copied, report.stats.present) == (1, len(rows) - 1)
        # the alias moved onto an indexed collection: nothing left for queries to scan
        new_name = collection_name(settings.milvus, new_version)
        assert all(int(i["indexed_rows"]) >= len(rows) and not int(i["pending_index_rows"])
                   for i in cols.indexes(new_name).values())
        # the copies: same detection, the new version's embedding of the stored crop
        copied = client.query(new_name, filter="id != 0", limit=16384,
                              consistency_level="Strong",
                              output_fields=["id", "camera_id", "ts_us", "model_version"])
        assert sorted(r["id"] for r in copied) == sorted(r.id for r in rows)
        assert {r["model_version"] for r in copied} == {new_version}
        assert {r["id"]: r["ts_us"] for r in copied}[later.id] == later.ts_us
        det = stub.GetDetection(search_pb2.GetDetectionRequest(id=rows[0].id),
                                timeout=RPC_TIMEOUT_S).detection
        assert det.model_version == new_version and det.camera_id == rows[0].camera_id
        # rolling back is moving the alias back, from the command line (nothing to copy)
        env = {**os.environ, "PEDSEARCH_MILVUS__URI": settings.milvus.uri,
               "PEDSEARCH_MILVUS__ALIAS": settings.milvus.alias,
               "PEDSEARCH_MILVUS__COLLECTION_PREFIX": settings.milvus.collection_prefix,
               "PEDSEARCH_REDIS__URL": servers.redis,
               "PEDSEARCH_PATHS__CROPS_DIR": str(settings.paths.crops_dir)}
        proc = subprocess.run([sys.executable, "-m", "pedsearch.cli", "rollout", "--no-copy",
                               "--bundle", str(servers.bundle_path)], env=env, text=True,
                              capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f"-> {old}" in proc.stdout and "1 of 1 reporting gateways hold" in proc.stdout
        assert cols.resolve_alias() == old
        # `pedsearch status` shows the gateway, the versions it holds and what is staged
        proc = subprocess.run([sys.executable, "-m", "pedsearch.cli", "status"],
                              env={**env, "COLUMNS": "250"}, text=True, capture_output=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        gateway_line = next(x for x in proc.stdout.splitlines() if server.address in x)
        assert "SERVING" in gateway_line and new_version in gateway_line
        assert f"{new_version} ({new_path})" in " ".join(proc.stdout.split())
        # both versions stay staged (the one just left is kept for a roll-back); unstaged, the
        # loaded one is dropped, the one the gateway was started with is not
        assert set(fleet.staged()) == {servers.bundle.version, new_version}
        proc = subprocess.run([sys.executable, "-m", "pedsearch.cli", "rollout", "--unstage",
                               new_version], env=env, text=True, capture_output=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert fleet.staged() == {servers.bundle.version: str(servers.bundle_path.absolute())}
        deadline = time.monotonic() + 20  # the health monitor's next rounds
        while [g.versions for g in fleet.gateways()] != [[servers.bundle.version]]:
            assert time.monotonic() < deadline, fleet.gateways()
            time.sleep(0.5)
        channel.close()
    assert fleet.gateways() == []  # a stopped gateway withdraws its report
    client.drop_alias(settings.milvus.alias)
    for name in (old, collection_name(settings.milvus, new_version)):
        client.drop_collection(name)
    client.close()


def test_rollout_does_not_switch_while_a_gateway_cannot_load_the_bundle(servers, tmp_path):
    """A staged bundle a gateway cannot read: the switch is refused with the gateway's reason
    and the alias stays; forced, that gateway is NOT_SERVING and says what to do, until it can
    load the bundle."""
    settings = gateway_settings(servers, tmp_path)
    client = MilvusClient(uri=settings.milvus.uri)
    cols = DetectionCollections(client, settings.milvus)
    old = cols.ensure(servers.bundle.version, embed_dim=servers.bundle.embed_dim,
                      attributes=servers.bundle.schema)
    new_version = f"vNew_{uuid.uuid4().hex[:8]}"
    new_path = _bundle_copy(servers.bundle_path, tmp_path / "new-bundle", new_version)
    new_bundle = load_bundle(new_path, parts=("image",))
    fleet = Fleet(redis.Redis.from_url(servers.redis), settings.milvus.alias)
    crops = CropStore(settings.paths.crops_dir)
    text = search_pb2.SearchTextRequest(text="a man")
    try:
        with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
            channel, stub, health = connect(server.address)
            # the path the gateways are given is not where the bundle is (no shared volume)
            with pytest.raises(NotReady) as err:
                rollout(cols, crops, new_bundle, fleet=fleet, copy=False, wait_s=6,
                        bundle_path=str(tmp_path / "elsewhere"))
            assert "1 of 1 reporting gateways" in err.value.message
            assert f"loading {new_version} failed" in err.value.message
            assert "elsewhere" in err.value.message and "--force" in err.value.message
            assert cols.resolve_alias() == old and health_of(health) == "SERVING"
            # forced: the gateway cannot answer with the aliased version and says so
            forced = rollout(cols, crops, new_bundle, fleet=fleet, copy=False, wait_s=0,
                             force=True, bundle_path=str(tmp_path / "elsewhere"))
            assert forced.switched and [g.versions for g in forced.gateways] == [
                [servers.bundle.version]]
            deadline = time.monotonic() + 20
            while health_of(health) != "NOT_SERVING":
                assert time.monotonic() < deadline
                time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as err:
                stub.SearchText(text, timeout=RPC_TIMEOUT_S)
            assert err.value.code() == CODE.FAILED_PRECONDITION
            assert "rollout --no-switch" in err.value.details()
            assert stub.ListCameras(search_pb2.ListCamerasRequest(),
                                    timeout=RPC_TIMEOUT_S).model_version == new_version
            # staged where the gateway can read it: loaded at once (not after the retry delay)
            fleet.stage(new_version, str(new_path))
            deadline = time.monotonic() + 20
            while health_of(health) != "SERVING":
                assert time.monotonic() < deadline
                time.sleep(0.5)
            assert stub.SearchText(text, timeout=RPC_TIMEOUT_S).model_version == new_version
            # the version the alias is on cannot be unstaged, nor one never staged
            with pytest.raises(InvalidInput, match="points at"):
                unstage(fleet, cols, new_version)
            with pytest.raises(InvalidInput, match="not staged"):
                unstage(fleet, cols, "vNever")
            channel.close()
    finally:
        fleet.keep_staged(set())
        client.drop_alias(settings.milvus.alias)
        for name in (old, collection_name(settings.milvus, new_version)):
            client.drop_collection(name)
        client.close()


def test_no_index_yet_is_failed_precondition(servers, tmp_path):
    settings = gateway_settings(servers, tmp_path)
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        channel, stub, health = connect(server.address)
        assert health_of(health) == "SERVING"  # bundle loaded, Milvus up: it can serve
        for call in (lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a man"),
                                             timeout=RPC_TIMEOUT_S),
                     lambda: stub.SearchAttributes(search_pb2.SearchAttributesRequest(
                         constraints=[GOOD_C]), timeout=RPC_TIMEOUT_S),
                     lambda: stub.GetDetection(search_pb2.GetDetectionRequest(id=1),
                                               timeout=RPC_TIMEOUT_S)):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == CODE.FAILED_PRECONDITION
            assert "no index yet" in err.value.details()
        # an index of another model version behind the alias: the message says what to do
        client = MilvusClient(uri=settings.milvus.uri)
        DetectionCollections(client, settings.milvus).ensure(
            "vOther_model", embed_dim=servers.bundle.embed_dim,
            attributes=servers.bundle.schema)
        with pytest.raises(grpc.RpcError) as err:
            stub.SearchText(search_pb2.SearchTextRequest(text="a man"), timeout=RPC_TIMEOUT_S)
        assert err.value.code() == CODE.FAILED_PRECONDITION
        assert "vOther_model" in err.value.details() and "--bundle" in err.value.details()
        assert code_of(lambda: _watch_first(stub, search_pb2.WatchRequest(
            text="a man", threshold=0.5))) == CODE.FAILED_PRECONDITION
        client.drop_alias(settings.milvus.alias)
        client.drop_collection(collection_name(settings.milvus, "vOther_model"))
        client.close()
        channel.close()


def test_collection_released_by_a_milvus_restart_is_loaded_again_with_its_indexes(servers,
                                                                                   tmp_path):
    settings = gateway_settings(servers, tmp_path)
    client = MilvusClient(uri=settings.milvus.uri)
    # a collection made before milvus.scalar_indexes listed any field
    scan_only = settings.milvus.model_copy(update={"scalar_indexes": []})
    name = DetectionCollections(client, scan_only).ensure(
        servers.bundle.version, embed_dim=servers.bundle.embed_dim,
        attributes=servers.bundle.schema)
    try:
        with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
            channel, stub, health = connect(server.address)
            client.release_collection(name)  # what a Milvus restart leaves
            assert server.check_health()  # the monitor's check, run now
            assert str(client.get_load_state(name)["state"]).endswith("Loaded")
            indexes = DetectionCollections(client, settings.milvus).indexes(name)
            assert set(indexes) == {"embedding", "camera_id", "ts_us"}
            resp = stub.SearchText(search_pb2.SearchTextRequest(
                text="a man", filter=search_pb2.Filter(camera_ids=["cam-1"])),
                timeout=RPC_TIMEOUT_S)
            assert resp.collection == name and len(resp.hits) == 0
            channel.close()
    finally:
        client.drop_alias(settings.milvus.alias)
        client.drop_collection(name)
        client.close()


def test_no_model_bundle_is_failed_precondition_and_not_serving(servers, tmp_path):
    settings = gateway_settings(servers, tmp_path)
    settings.model.bundle = tmp_path / "no-such-bundle"
    with create_server("127.0.0.1:0", settings=settings) as server:
        channel, stub, health = connect(server.address)
        assert health_of(health) == "NOT_SERVING"
        for call in (lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a man"),
                                             timeout=RPC_TIMEOUT_S),
                     lambda: stub.ListCameras(search_pb2.ListCamerasRequest(),
                                              timeout=RPC_TIMEOUT_S),
                     lambda: _watch_first(stub, search_pb2.WatchRequest(text="a man",
                                                                        threshold=0.5))):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == CODE.FAILED_PRECONDITION
            assert "no model bundle" in err.value.details()
        channel.close()


def test_dead_milvus_is_unavailable_and_dead_redis_fails_open_for_the_rate_limit(servers,
                                                                                 tmp_path):
    settings = gateway_settings(servers, tmp_path)
    settings.milvus.uri = f"http://127.0.0.1:{free_port()}"
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        channel, stub, health = connect(server.address)
        assert health_of(health) == "NOT_SERVING"
        assert code_of(lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a man"),
                                               timeout=RPC_TIMEOUT_S)) == CODE.UNAVAILABLE
        assert code_of(lambda: stub.GetDetection(search_pb2.GetDetectionRequest(id=3),
                                                 timeout=RPC_TIMEOUT_S)) == CODE.UNAVAILABLE
        # bad input is still INVALID_ARGUMENT: it is checked before Milvus is asked
        assert code_of(lambda: stub.SearchText(search_pb2.SearchTextRequest(text=""),
                                               timeout=RPC_TIMEOUT_S)) == CODE.INVALID_ARGUMENT
        # the live feed is in Redis: cameras and watches still work
        assert code_of(lambda: stub.ListCameras(search_pb2.ListCamerasRequest(),
                                                timeout=RPC_TIMEOUT_S)) == CODE.OK
        channel.close()
    settings = gateway_settings(servers, tmp_path, rate_limit_per_s=1.0, rate_limit_burst=1)
    settings.redis.url = f"redis://127.0.0.1:{free_port()}/0"
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        channel, stub, health = connect(server.address)
        assert code_of(lambda: stub.ListCameras(search_pb2.ListCamerasRequest(),
                                                timeout=RPC_TIMEOUT_S)) == CODE.UNAVAILABLE
        assert code_of(lambda: _watch_first(stub, search_pb2.WatchRequest(
            text="a man", threshold=0.5))) == CODE.UNAVAILABLE
        # the limiter cannot count: requests pass (fail open) instead of being refused
        for _ in range(3):
            assert code_of(lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a man"),
                                                   timeout=RPC_TIMEOUT_S)) == \
                CODE.FAILED_PRECONDITION
        channel.close()


def test_watch_limit_and_shutdown_end_streams(servers, tmp_path):
    settings = gateway_settings(servers, tmp_path, max_watches=1)
    server = create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle).start()
    channel, stub, health = connect(server.address)
    reader = WatchReader(stub, search_pb2.WatchRequest(text="a man", threshold=0.5))
    assert reader.next().WhichOneof("event") == "heartbeat"
    with pytest.raises(grpc.RpcError) as err:
        _watch_first(stub, search_pb2.WatchRequest(text="a woman", threshold=0.5))
    assert err.value.code() == CODE.RESOURCE_EXHAUSTED
    assert "at most 1 Watch" in err.value.details()
    server.stop(grace=5.0)  # ends the open watch: its stream finishes
    reader.thread.join(timeout=10)
    assert not reader.thread.is_alive() and reader.code in (CODE.OK, CODE.UNAVAILABLE,
                                                            CODE.CANCELLED)
    channel.close()


# ------------------------------------------------------------------------------------------------
# auth, TLS, rate limit
# ------------------------------------------------------------------------------------------------

def _with_token(token):
    return (("authorization", f"Bearer {token}"),)


def test_bearer_tokens(servers, tmp_path):
    settings = gateway_settings(servers, tmp_path, tokens={"t-admin": ["*"],
                                                           "t-cams": ["ListCameras"]})
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        channel, stub, health = connect(server.address)

        def cameras(metadata=None):
            return code_of(lambda: stub.ListCameras(search_pb2.ListCamerasRequest(),
                                                    timeout=RPC_TIMEOUT_S, metadata=metadata))

        def text(metadata=None):
            return code_of(lambda: stub.SearchText(search_pb2.SearchTextRequest(text="a man"),
                                                   timeout=RPC_TIMEOUT_S, metadata=metadata))

        assert cameras() == CODE.UNAUTHENTICATED
        assert cameras((("authorization", "Basic dXNlcjpwYXNz"),)) == CODE.UNAUTHENTICATED
        assert cameras(_with_token("t-wrong")) == CODE.UNAUTHENTICATED
        assert text(_with_token("t-cams")) == CODE.PERMISSION_DENIED
        assert cameras(_with_token("t-cams")) == CODE.OK
        assert cameras(_with_token("t-admin")) == CODE.OK
        assert text(_with_token("t-admin")) == CODE.FAILED_PRECONDITION  # passed auth: no index
        assert code_of(lambda: _watch_first(stub, search_pb2.WatchRequest(
            text="a man", threshold=0.5))) == CODE.UNAUTHENTICATED
        # health and reflection stay open
        assert health_of(health) == "SERVING"
        channel.close()


def test_tls(servers, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: it makes the test's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    settings = gateway_settings(servers, tmp_path, tls_cert=str(cert), tls_key=str(key))
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        assert server.tls
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        channel, stub, health = connect(server.address, creds)
        resp = stub.ListCameras(search_pb2.ListCamerasRequest(), timeout=RPC_TIMEOUT_S)
        assert resp.model_version == servers.bundle.version
        assert health_of(health) == "SERVING"
        channel.close()
        # plaintext against the TLS port does not get through
        channel, stub, _ = connect(server.address)
        assert code_of(lambda: stub.ListCameras(search_pb2.ListCamerasRequest(),
                                                timeout=5)) == CODE.UNAVAILABLE
        channel.close()
    settings.gateway.tls_key = None
    from pedsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="tls_cert and gateway.tls_key"):
        create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle)


def test_rate_limit_per_client(servers, tmp_path):
    settings = gateway_settings(servers, tmp_path, rate_limit_per_s=0.5, rate_limit_burst=4,
                                tokens={"t-a": ["*"], "t-b": ["*"]})
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        channel, stub, health = connect(server.address)
        codes = []
        for _ in range(6):
            try:
                stub.ListCameras(search_pb2.ListCamerasRequest(), timeout=RPC_TIMEOUT_S,
                                 metadata=_with_token("t-a"))
                codes.append(CODE.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                retry = dict(exc.trailing_metadata() or ()).get("retry-after-ms")
                assert "retry in" in exc.details() and retry and int(retry) > 0
        # the burst passes (at most one refill at 0.5/s happens meanwhile), then it refuses
        assert codes[:4] == [CODE.OK] * 4 and codes[-1] == CODE.RESOURCE_EXHAUSTED
        # another client has its own bucket; health is never limited
        assert code_of(lambda: stub.ListCameras(search_pb2.ListCamerasRequest(),
                                                timeout=RPC_TIMEOUT_S,
                                                metadata=_with_token("t-b"))) == CODE.OK
        for _ in range(8):
            assert health_of(health) == "SERVING"
        channel.close()


# ------------------------------------------------------------------------------------------------
# the serve command and the metrics endpoint
# ------------------------------------------------------------------------------------------------

def test_gateway_serve_command_serves_until_sigterm(servers, tmp_path):
    settings = gateway_settings(servers, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({"PEDSEARCH_MILVUS__URI": settings.milvus.uri,
                "PEDSEARCH_MILVUS__ALIAS": settings.milvus.alias,
                "PEDSEARCH_REDIS__URL": settings.redis.url, "PYTHONUNBUFFERED": "1",
                "COLUMNS": "200"})
    metrics_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pedsearch.cli", "gateway", "serve", "--address", "127.0.0.1:0",
         "--bundle", str(servers.bundle_path), "--metrics-port", str(metrics_port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and address is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                address = line.split("listening on", 1)[1].split()[0]
        assert address, "".join(lines)
        channel, stub, health = connect(address)
        assert health_of(health) == "SERVING"
        assert code_of(lambda: stub.SearchText(search_pb2.SearchTextRequest(text=""),
                                               timeout=RPC_TIMEOUT_S)) == CODE.INVALID_ARGUMENT
        stub.ListCameras(search_pb2.ListCamerasRequest(), timeout=RPC_TIMEOUT_S)
        channel.close()
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=10).read().decode()
        assert re.search(r'pedsearch_gateway_requests_total\{code="INVALID_ARGUMENT",'
                         r'method="SearchText"\} [1-9]', body)
        assert 'pedsearch_gateway_request_seconds_count{method="ListCameras"}' in body
        assert (f'pedsearch_gateway_model_versions{{version="{servers.bundle.version}"}} 1.0'
                in body)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, "".join(lines) + out
        assert "stopping the gateway" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_taken_port(servers, tmp_path):
    settings = gateway_settings(servers, tmp_path)
    with create_server("127.0.0.1:0", settings=settings, bundle=servers.bundle) as server:
        from pedsearch.errors import ConfigError

        with pytest.raises(ConfigError, match="cannot listen on"):
            create_server(server.address, settings=settings, bundle=servers.bundle)
