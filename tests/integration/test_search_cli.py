"""``pedsearch search`` / ``watch`` / ``cameras``: the real command line against a real gateway.

A small synthetic scene is ingested for real (Kafka-API broker -> Ray workers -> Milvus, Redis
live feed), the gRPC gateway serves it in this process on a free port, and the CLI runs as a
user runs it: a subprocess of ``python -m pedsearch.cli``.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import redis
from pymilvus import MilvusClient

from gateway.client import connect
from pedsearch.attributes import AttributeSchema
from pedsearch.config import ENV_PREFIX, load_settings
from pedsearch.contact_sheet import sheet_size
from pedsearch.live import LiveFeed
from pedsearch.schema import DetectionRow
from pedsearch.synthetic.captions import describe
from workers.camera.publisher import FramePublisher, make_producer
from workers.camera.sources import SyntheticSource
from workers.runtime import IngestWorkers

pytestmark = pytest.mark.integration

SCENE = dict(camera_id="cli", cameras=2, people=4, seed=5, fps=5.0, duration_s=12.0)
#: the embedded broker completes a group's first join only after max_poll_interval_ms
POLL_INTERVAL_MS = 6000
CLI_TIMEOUT_S = 120


def publish(settings, **scene) -> SyntheticSource:
    source = SyntheticSource(realtime=False, **scene)
    publisher = FramePublisher(producer=make_producer(settings.kafka),
                               topic=settings.kafka.frames_topic)
    for sf in source.frames(threading.Event()):
        publisher.publish(sf)
    publisher.close()
    assert publisher.stats.failed == 0
    return source


def ingest(settings) -> int:
    workers = IngestWorkers(settings)
    try:
        results = workers.run(threading.Event(), idle_exit_s=6.0)
    finally:
        workers.shutdown()
    return sum(r["crops"] for r in results)


@pytest.fixture(scope="module")
def indexed(kafka_broker, milvus_server, redis_server, ray_local, ingest_bundle_path,
            tmp_path_factory):
    """A scene ingested for real and a running gateway over it."""
    from gateway.server import create_server

    name = f"t_cli_{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("search_cli")
    with pytest.MonkeyPatch.context() as mp:  # nothing from the developer's shell
        for key in list(os.environ):
            if key.startswith(ENV_PREFIX) and not key.startswith("PEDSEARCH_TEST_"):
                mp.delenv(key)
        settings = load_settings(
            None,
            kafka={"bootstrap_servers": kafka_broker, "frames_topic": f"{name}.frames",
                   "dlq_topic": f"{name}.frames.dlq", "consumer_group": f"{name}.workers",
                   "max_poll_interval_ms": POLL_INTERVAL_MS,
                   "session_timeout_ms": POLL_INTERVAL_MS},
            milvus={"uri": milvus_server, "alias": name, "collection_prefix": f"{name}_v"},
            redis={"url": redis_server},
            paths={"crops_dir": str(tmp / "crops")},
            model={"bundle": str(ingest_bundle_path)},
            workers={"consumers": 1, "embedders": 1, "embed_batch": 16},
        )
    source = publish(settings, **SCENE)
    crops = ingest(settings)
    assert crops > 0
    server = create_server("127.0.0.1:0", settings=settings).start()
    try:
        yield SimpleNamespace(address=server.address, settings=settings, crops=crops,
                              scene=source.build_scene(), tmp=tmp)
    finally:
        server.stop()


def cli(*args: str, timeout: float = CLI_TIMEOUT_S,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pedsearch.cli", *args],
                          env={**_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    # wide enough that rich never folds a table row; unbuffered so a watch's lines arrive live
    return {**env, "COLUMNS": "220", "PYTHONUNBUFFERED": "1"}


def table_rows(stdout: str) -> list[dict]:
    """The hit rows of the printed table: rank, score, camera, time, track, attributes, id."""
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃|").split("│")]
        if len(cells) == 7 and cells[0].isdigit():
            rows.append({"rank": int(cells[0]), "score": float(cells[1]), "camera": cells[2],
                         "time": cells[3], "track": int(cells[4]), "attrs": cells[5],
                         "id": int(cells[6])})
    return rows


def _text_of(scene, pid: int) -> str:
    return describe(scene.person(pid).attributes, np.random.default_rng(pid))


def test_text_search_prints_the_table_and_writes_the_contact_sheets(indexed, tmp_path):
    text = _text_of(indexed.scene, 0)
    out = tmp_path / "sheet"
    proc = cli("search", text, "-k", "5", "--out", str(out), "--gateway", indexed.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for header in ("rank", "score", "camera", "time (UTC)", "track", "top attributes", "id"):
        assert header in proc.stdout
    rows = table_rows(proc.stdout)
    assert [r["rank"] for r in rows] == list(range(1, min(5, indexed.crops) + 1))
    assert all(r["camera"].startswith("cli-") for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    # the same answer as the Python client gives
    with connect(indexed.address) as gw:
        direct = gw.search_text(text, k=5)
    assert [r["id"] for r in rows] == [h.detection.id for h in direct.hits]
    # the sheets hold one crop per hit, fetched through GetDetection
    page = (out / "contact_sheet.html").read_text()
    assert page.count("data:image/jpeg;base64,") == len(rows)
    assert "no image" not in page and all(r["camera"] in page for r in rows)
    png = cv2.imread(str(out / "contact_sheet.png"))
    assert png.shape[:2] == sheet_size(len(rows), cols=len(rows), title=text)
    assert f"contact sheet: {out / 'contact_sheet.html'}" in proc.stdout


def test_hard_attribute_search_returns_only_hits_with_that_attribute(indexed, tmp_path):
    # attributes the model does predict in this scene: up to two families (probability >= 0.5)
    # of the stored detection with the most confident prediction
    with connect(indexed.address) as gw:
        hits = gw.search_text("a person", k=100).hits
    top = max((h.detection for h in hits), key=lambda d: max(d.attributes.values()))
    chosen: dict[str, str] = {}
    for key, p in sorted(top.attributes.items(), key=lambda kv: -kv[1]):
        family = key.split("=")[0]
        if p >= 0.5 and family not in chosen and len(chosen) < 2:
            chosen[family] = key
    assert chosen, top.attributes
    attr_args = [a for key in chosen.values() for a in ("--attr", key)]
    proc = cli("search", *attr_args, "--hard", "-k", "1000", "--sheet", "0",
               "--gateway", indexed.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert top.id in [r["id"] for r in rows]
    with connect(indexed.address) as gw:
        for r in rows:
            probs = gw.get_detection(r["id"]).detection.attributes
            assert all(probs[key] >= 0.5 for key in chosen.values()), (
                r, {k: probs[k] for k in chosen.values()})
    assert not (tmp_path / "contact_sheet.html").exists()  # --sheet 0


def test_image_search_with_a_time_filter(indexed, tmp_path):
    with connect(indexed.address) as gw:
        hit = gw.search_text(_text_of(indexed.scene, 1), k=1).hits[0]
        crop = gw.get_detection(hit.detection.id, include_crop=True).crop_jpeg
    image = tmp_path / "crop.jpg"
    image.write_bytes(crop)
    proc = cli("search", "--image", str(image), "--since", "1d", "-k", "10",
               "--out", str(tmp_path / "out"), "--gateway", indexed.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert rows and all(r["camera"].startswith("cli-") for r in rows), proc.stdout
    assert hit.detection.id in [r["id"] for r in rows]
    assert (tmp_path / "out" / "contact_sheet.png").is_file()
    # everything was captured in the last minutes: an hour ago ends before any of it
    proc = cli("search", "--image", str(image), "--until", "1h", "--gateway", indexed.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert table_rows(proc.stdout) == [] and "0 hits" in proc.stdout
    # the same by the detection's id: its stored crop is the example, and finds it first
    proc = cli("search", "--like", str(hit.detection.id), "-k", "3", "--sheet", "0",
               "--gateway", indexed.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert table_rows(proc.stdout)[0]["id"] == hit.detection.id
    assert f"like detection {hit.detection.id}" in proc.stdout


def test_camera_filter_keeps_only_that_camera(indexed):
    with connect(indexed.address) as gw:
        cam = gw.search_text("a person", k=1).hits[0].detection.camera_id
    proc = cli("search", "a person", "--camera", cam, "-k", "10", "--sheet", "0",
               "--gateway", indexed.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = table_rows(proc.stdout)
    assert rows and {r["camera"] for r in rows} == {cam}, proc.stdout


def test_cameras_lists_the_scene(indexed):
    proc = cli("cameras", "--gateway", indexed.address)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for i in range(SCENE["cameras"]):
        assert re.search(rf"cli-{i}\s+│\s+[1-9]\d*", proc.stdout), proc.stdout


@pytest.mark.parametrize("args, message", [
    ([], "nothing to search for: give a text, --attr, --image or --like"),
    (["a man", "--since", "yesterday"], "'yesterday' is not a time"),
    (["a man", "-k", "0"], "argument -k/--top-k: must be 1..1000, got 0"),
    (["--attr", "upper_color"], "must look like family=value"),
    (["a man", "--since", "1h", "--until", "2h"], "--since is after --until"),
    (["a man", "--image", "x.jpg"], "give one of a text, --image and --like"),
    (["--image", "x.jpg", "--like", "7"], "give one of a text, --image and --like"),
    (["--like", "0"], "argument --like: must be 1..9223372036854775807, got 0"),
    (["a man", "--hard"], "--hard needs at least one --attr"),
    (["a man", "--min-score", "nan"],
     "must be -10.0..10.0 (a similarity score, about -1..1), got nan"),
    (["--image", "/nonexistent/crop.jpg"], "--image /nonexistent/crop.jpg: no such file"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, message, tmp_path):
    # refused before any connection: no gateway needed
    proc = cli("search", *args, "--gateway", "127.0.0.1:1", "--out", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "usage: pedsearch search" in proc.stderr
    assert message in " ".join(proc.stderr.split())


def test_requests_the_gateway_rejects_exit_2_with_its_message(indexed, tmp_path):
    proc = cli("search", "--attr", "upper_color=plaid", "--gateway", indexed.address)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "plaid" in proc.stderr and "upper_color" in proc.stderr
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    proc = cli("search", "--image", str(not_image), "--gateway", indexed.address)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error:" in proc.stderr
    # the gateway is still up
    assert cli("cameras", "--gateway", indexed.address).returncode == 0


def test_a_gateway_that_is_down_is_named_with_how_to_start_it(tmp_path):
    proc = cli("search", "a man", "--gateway", "127.0.0.1:1")
    assert proc.returncode == 1
    assert ("cannot reach the gateway at 127.0.0.1:1: start it with `pedsearch gateway serve`"
            in proc.stderr)
    proc = cli("watch", "a man", "--threshold", "0.3", "--gateway", "127.0.0.1:1")
    assert proc.returncode == 1 and "cannot reach the gateway" in proc.stderr


def _start_watch(*args: str) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "pedsearch.cli", "watch", *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + CLI_TIMEOUT_S
    while not any("watching for" in x for x in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the watch did not start:\n" + "".join(lines))
        time.sleep(0.2)
    return proc, lines


def test_watch_prints_a_person_who_appears_after_it_began(indexed):
    proc, lines = _start_watch("a person walking", "--threshold", "-1", "--max-matches", "1",
                               "--duration", "300", "--gateway", indexed.address)
    try:
        # a new camera appears and its people are indexed while the watch runs
        publish(indexed.settings, camera_id="late", cameras=1, people=2, seed=9, fps=5.0,
                duration_s=8.0)
        assert ingest(indexed.settings) > 0
        assert proc.wait(timeout=CLI_TIMEOUT_S) == 0, "".join(lines)
    finally:
        proc.kill()
    out = "".join(lines)
    assert re.search(r"match 1 score -?\d\.\d{3}\s+late-0\s", out), out
    assert "the watch ended after 1 match(es)" in out


def test_watch_ends_cleanly_on_ctrl_c(indexed):
    proc, lines = _start_watch("--attr", "backpack=yes", "--threshold", "0.5",
                               "--gateway", indexed.address)
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, "".join(lines)
    finally:
        proc.kill()
    assert "stopped after 0 match(es)" in "".join(lines)


def test_watch_for_the_person_of_a_stored_detection(indexed):
    """``watch --like ID``: the detection's stored crop is the example and its own track is
    skipped: a later crop of that track is not printed, the same look on another camera is."""
    with connect(indexed.address) as gw:
        d = gw.search_text(_text_of(indexed.scene, 0), k=1).hits[0].detection
    client = MilvusClient(uri=indexed.settings.milvus.uri)
    (stored,) = client.query(indexed.settings.milvus.alias, filter=f"id == {d.id}",
                             output_fields=["embedding", "model_version", "crop_ref"])
    client.close()

    def sighting(new_id: int, camera: str, track: int) -> DetectionRow:
        return DetectionRow(
            id=new_id, camera_id=camera, ts_us=d.ts_us + 1_000_000, track_id=track,
            frame_seq=0, box=(0.0, 0.0, 64.0, 128.0), det_score=0.9,
            crop_ref=stored["crop_ref"], model_version=stored["model_version"],
            # the stored vector ends with the attribute-space part (VectorLayout)
            embedding=np.asarray(stored["embedding"], np.float32)[:-AttributeSchema.default().dim],
            attributes=np.zeros(AttributeSchema.default().dim, np.float32))

    proc, lines = _start_watch("--like", str(d.id), "--threshold", "0.9", "--max-matches", "1",
                               "--gateway", indexed.address)
    try:
        feed = LiveFeed(redis.Redis.from_url(indexed.settings.redis.url),
                        indexed.settings.milvus.alias)
        feed.publish([sighting(d.id + 1, d.camera_id, d.track_id),  # still in view: skipped
                      sighting(d.id + 2, "again-0", 1)])            # appears again elsewhere
        assert proc.wait(timeout=CLI_TIMEOUT_S) == 0, "".join(lines)
    finally:
        proc.kill()
    out = "".join(lines)
    assert f"watching for like detection {d.id} (its own track {d.track_id} on " \
           f"{d.camera_id} skipped)" in " ".join(out.split()), out
    assert re.search(r"match 1 score \d\.\d{3}\s+again-0\s", out), out
    assert "the watch ended after 1 match(es)" in out
    # an id that names no stored detection: nothing to watch for, and said so
    proc = cli("watch", "--like", "12345", "--threshold", "0.8", "--gateway", indexed.address)
    assert proc.returncode == 2 and "12345" in proc.stderr, proc.stdout + proc.stderr


def test_bad_watch_arguments_exit_2():
    proc = cli("watch", "a man", "--gateway", "127.0.0.1:1")
    assert proc.returncode == 2 and "--threshold" in proc.stderr
    proc = cli("watch", "--threshold", "0.4", "--gateway", "127.0.0.1:1")
    assert proc.returncode == 2 and "nothing to search for: give a text, --attr, --image or " \
        "--like" in " ".join(proc.stderr.split())
    proc = cli("watch", "--like", "7", "--attr", "hat=yes", "--threshold", "0.4", "--gateway",
               "127.0.0.1:1")
    assert proc.returncode == 2 and "a watch is one query" in proc.stderr


def test_default_gateway_address_comes_from_the_configuration(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("gateway:\n  address: 0.0.0.0:1\n")
    proc = cli("--config", str(config), "search", "a man")
    assert proc.returncode == 1 and "cannot reach the gateway at 127.0.0.1:1" in proc.stderr
    config.write_text("gateway:\n  address: '[::]:1'\n")
    proc = cli("--config", str(config), "search", "a man")
    assert proc.returncode == 1 and "cannot reach the gateway at 127.0.0.1:1" in proc.stderr


def test_the_readme_python_snippet_runs(indexed):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    api = readme[readme.index("\n## The gRPC API\n"):]
    snippet = re.search(r"```python\n(.*?)```", api, re.S).group(1)
    assert "127.0.0.1:50051" in snippet
    proc = subprocess.run([sys.executable, "-c", snippet.replace("127.0.0.1:50051",
                                                                 indexed.address)],
                          env=_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^-?\d\.\d{3} cli-\d \d+ track \d+", proc.stdout, re.M), proc.stdout


def test_token_and_tls(indexed, tmp_path):
    from gateway.server import create_server

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: it makes the test's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    settings = indexed.settings.model_copy(deep=True)
    settings.gateway.tls_cert, settings.gateway.tls_key = cert, key
    settings.gateway.tokens = {"operator": ["*"], "viewer": ["ListCameras"]}
    with create_server("127.0.0.1:0", settings=settings) as server:
        secure = ["--gateway", server.address, "--tls-ca", str(cert)]
        proc = cli("cameras", *secure, "--token", "operator")
        assert proc.returncode == 0 and "cli-0" in proc.stdout, proc.stdout + proc.stderr
        proc = cli("search", "a person", *secure, "--token", "viewer", "--sheet", "0")
        assert proc.returncode == 2
        assert "refused the call (PERMISSION_DENIED)" in " ".join(proc.stderr.split())
        proc = cli("search", "a person", *secure, "--sheet", "0")
        assert proc.returncode == 2
        assert "(UNAUTHENTICATED)" in proc.stderr and "pass --token" in proc.stderr
        proc = cli("search", "a person", *secure, "--sheet", "0",
                   env={"PEDSEARCH_TOKEN": "operator"})
        assert proc.returncode == 0 and table_rows(proc.stdout), proc.stdout + proc.stderr
        # plaintext to a TLS port: told how to connect
        proc = cli("cameras", "--gateway", server.address, "--token", "operator")
        assert proc.returncode == 1 and "needs --tls-ca" in proc.stderr
        missing = cli("cameras", *secure[:2], "--tls-ca", str(tmp_path / "nope.pem"))
        assert missing.returncode == 2 and "cannot read the TLS CA file" in missing.stderr
