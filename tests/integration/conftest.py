"""Session fixtures that start the real servers integration tests talk to.

Each fixture is named after what it starts and returns the address clients are given:

- ``kafka_broker``  -> bootstrap ``"host:port"`` (Tansu; in-memory storage)
- ``milvus_server`` -> ``"http://host:port"``
- ``redis_server``  -> ``"redis://host:port/0"``
- ``ray_local``     -> the ``ray.init`` context shared by the session

A server already running elsewhere is reused when its address is in the environment
(``PEDSEARCH_TEST_KAFKA``, ``PEDSEARCH_TEST_MILVUS``, ``PEDSEARCH_TEST_REDIS``; ``RAY_ADDRESS``
for Ray), for example the stack of ``pedsearch stack up``. Otherwise the embedded server starts
on free ports in a temporary folder and stops when the session ends; a server that does not come
up fails the test with its log quoted.

``settings`` (function scope) is a :class:`pedsearch.config.Settings` pointing at these servers,
with topic, consumer-group and collection/alias names unique to the test, so tests never read
each other's data.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from deploy.stack import (
    LOCAL_MAX_POLL_INTERVAL_MS,
    EmbeddedServer,
    KafkaBroker,
    MilvusServer,
    RedisServer,
)
from pedsearch.bundle import default_bundle_path
from pedsearch.config import ENV_PREFIX, Settings, load_settings
from pedsearch.errors import StackError

KAFKA_ENV = "PEDSEARCH_TEST_KAFKA"
MILVUS_ENV = "PEDSEARCH_TEST_MILVUS"
REDIS_ENV = "PEDSEARCH_TEST_REDIS"
#: seconds an embedded server gets to become ready (Milvus: ~7-15 s fresh on 2 cores)
START_TIMEOUT_S = float(os.environ.get("PEDSEARCH_TEST_START_TIMEOUT_S", "300"))
#: the embedded broker completes a group's first join only after max_poll_interval_ms
TEST_MAX_POLL_INTERVAL_MS = 6000


def pytest_configure(config: pytest.Config) -> None:
    # A run started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT
    # as ignored, and so would every child it starts; the Ctrl-C tests (demo --keep-running,
    # watch) send SIGINT to a child and need the default handling there.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _embedded(server: EmbeddedServer) -> Iterator[str]:
    server.start()
    try:
        try:
            server.wait_ready(START_TIMEOUT_S)
        except StackError as exc:
            pytest.fail(f"the embedded {server.name} did not start:\n{exc.message}", pytrace=False)
        yield server.address
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a Kafka-API broker: ``$PEDSEARCH_TEST_KAFKA`` or an embedded Tansu."""
    if address := os.environ.get(KAFKA_ENV):
        yield address
        return
    yield from _embedded(KafkaBroker(port=0, data_dir=tmp_path_factory.mktemp("kafka")))


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a Milvus server: ``$PEDSEARCH_TEST_MILVUS`` or an embedded Milvus standalone."""
    if address := os.environ.get(MILVUS_ENV):
        yield address
        return
    data_dir = tmp_path_factory.mktemp("milvus")
    try:
        yield from _embedded(MilvusServer(port=0, data_dir=data_dir))
    finally:
        # the unpacked server binaries weigh ~450 MB per data dir; the logs stay for reading
        shutil.rmtree(data_dir / "bin", ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server: ``$PEDSEARCH_TEST_REDIS`` or an embedded redis-server."""
    if address := os.environ.get(REDIS_ENV):
        yield address
        return
    yield from _embedded(RedisServer(port=0, data_dir=tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def ray_local():
    """A real Ray shared by the session: ``$RAY_ADDRESS`` if set, else a local 2-CPU Ray."""
    import ray

    if ray.is_initialized():  # started by someone else in this process: share, do not stop
        yield ray.get_runtime_context()
        return
    if os.environ.get("RAY_ADDRESS"):
        context = ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        context = ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield context
    finally:
        ray.shutdown()


def unique_name(request: pytest.FixtureRequest) -> str:
    """A name valid as Kafka topic, consumer group and Milvus collection: the test's + random."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40].strip("_") or "test"
    return f"t_{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path,
    kafka_broker: str,
    milvus_server: str,
    redis_server: str,
) -> Settings:
    """Settings pointing at the session's servers, with names no other test uses.

    The same values are put in the environment (``PEDSEARCH_<SECTION>__<FIELD>``) for the test's
    duration, and every other ``PEDSEARCH_*`` variable (``PEDSEARCH_CONFIG`` included) is
    removed, so code under test that calls ``load_settings()`` itself, or runs the CLI, sees
    exactly these settings and nothing from the developer's shell.
    """
    name = unique_name(request)
    values = {
        "KAFKA__BOOTSTRAP_SERVERS": kafka_broker,
        "KAFKA__FRAMES_TOPIC": f"{name}.frames",
        "KAFKA__DLQ_TOPIC": f"{name}.frames.dlq",
        "KAFKA__CONSUMER_GROUP": f"{name}.workers",
        "KAFKA__MAX_POLL_INTERVAL_MS": str(
            min(TEST_MAX_POLL_INTERVAL_MS, LOCAL_MAX_POLL_INTERVAL_MS)
        ),
        "KAFKA__SESSION_TIMEOUT_MS": str(TEST_MAX_POLL_INTERVAL_MS),
        "MILVUS__URI": milvus_server,
        "MILVUS__ALIAS": name,
        "MILVUS__COLLECTION_PREFIX": f"{name}_v",
        "REDIS__URL": redis_server,
        "STACK__DATA_DIR": str(tmp_path / "stack"),
        "PATHS__CROPS_DIR": str(tmp_path / "crops"),
    }
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX) and not key.startswith("PEDSEARCH_TEST_"):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(ENV_PREFIX + key, value)
    return load_settings(None)


@pytest.fixture(scope="session")
def ingest_bundle_path(tmp_path_factory) -> pathlib.Path:
    """``$PEDSEARCH_TEST_BUNDLE``, else the shipped default bundle, else what a short training
    run exports."""
    if os.environ.get("PEDSEARCH_TEST_BUNDLE"):
        return pathlib.Path(os.environ["PEDSEARCH_TEST_BUNDLE"])
    default = default_bundle_path()
    if (default / "bundle.json").is_file():
        return default
    out = tmp_path_factory.mktemp("bundle")
    cmd = [sys.executable, "-m", "pedsearch.cli", "train", "--config", "tiny",
           "--output-dir", str(out / "runs"), "--export", str(out / "bundle"), "--workers", "1"]
    subprocess.run(cmd, check=True, timeout=900, env={**os.environ, "RAY_ADDRESS": ""})
    return out / "bundle"
