"""`pedsearch stack up / status / down` start, serve and stop the real servers.

The stack is driven through the command line in separate processes, as a user runs it: `up`
returns while the servers keep running, and `status` and `down` find them through the state file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid

import pytest

from deploy._procs import pid_alive
from deploy._state import read_state, state_path
from deploy.stack import LocalStack, service_alive
from pedsearch.cli import main as pedsearch_main
from pedsearch.errors import StackError

START_TIMEOUT_S = 300


def _env() -> dict[str, str]:
    # the command must read nothing from the developer's shell configuration
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEDSEARCH_")}
    env["COLUMNS"] = "200"
    return env


def _pedsearch(*args: str, timeout: float = START_TIMEOUT_S + 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pedsearch.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=_env(),
    )


def _exports(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = value
    return out


@pytest.mark.integration
def test_stack_up_serves_kafka_milvus_redis_and_goes_down(tmp_path):
    data_dir = tmp_path / "stack"
    up = _pedsearch(
        "stack", "up", "--data-dir", str(data_dir),
        "--kafka-port", "0", "--milvus-port", "0", "--redis-port", "0",
        "--timeout", str(START_TIMEOUT_S),
    )
    state = read_state(state_path(data_dir))
    try:
        assert up.returncode == 0, up.stderr
        assert state is not None
        exports = _exports(up.stdout)
        bootstrap = exports["PEDSEARCH_KAFKA__BOOTSTRAP_SERVERS"]
        milvus_uri = exports["PEDSEARCH_MILVUS__URI"]
        redis_url = exports["PEDSEARCH_REDIS__URL"]
        assert {s.address for s in state.services.values()} == {bootstrap, milvus_uri, redis_url}
        # `up` has returned: the servers outlive the command that started them
        assert all(service_alive(s) for s in state.services.values())
        assert not pid_alive(state.owner_pid)

        status = _pedsearch("stack", "status", "--data-dir", str(data_dir), timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("kafka", "milvus", "redis"):
            assert name in status.stderr

        again = _pedsearch("stack", "up", "--data-dir", str(data_dir), timeout=120)
        assert again.returncode == 0, again.stderr
        assert "already up" in again.stderr
        assert _exports(again.stdout) == exports

        _kafka_round_trip(bootstrap)
        _milvus_round_trip(milvus_uri)
        _redis_round_trip(redis_url)
    finally:
        down = _pedsearch("stack", "down", "--data-dir", str(data_dir), timeout=180)
    assert down.returncode == 0, down.stderr
    assert not state_path(data_dir).exists()
    for service in state.services.values():
        assert not service_alive(service), f"{service.name} (pid {service.pid}) still runs"
    after = _pedsearch("stack", "status", "--data-dir", str(data_dir), timeout=60)
    assert after.returncode == 1
    assert "no stack" in after.stderr


def _kafka_round_trip(bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic, group = f"stack-test-{uuid.uuid4().hex[:8]}", f"stack-test-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        future = producer.send(topic, key=b"cam-1", value=b"frame-0", headers=[("kind", b"test")])
        meta = future.get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False, max_poll_interval_ms=6000, session_timeout_ms=6000,
    )
    try:
        records = []
        for _ in range(120):  # the first join completes after max_poll_interval_ms
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if records:
                break
        got = [(r.key, r.value, r.headers) for r in records]
        assert got == [(b"cam-1", b"frame-0", [("kind", b"test")])]
        tp = TopicPartition(topic, meta.partition)
        consumer.commit({tp: OffsetAndMetadata(records[0].offset + 1, "", -1)})
        assert consumer.committed(tp) == records[0].offset + 1
    finally:
        consumer.close()


def _milvus_round_trip(uri: str) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=uri, timeout=60)
    name = f"stack_test_{uuid.uuid4().hex[:8]}"
    try:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=4)
        index = client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="IP")
        client.create_collection(
            name, schema=schema, index_params=index, consistency_level="Strong"
        )
        rows = [{"id": i, "vec": [1.0 if j == i else 0.0 for j in range(4)]} for i in range(4)]
        assert client.insert(name, rows)["insert_count"] == 4
        hits = client.search(name, [[0.0, 0.0, 1.0, 0.0]], limit=2)
        assert hits[0][0]["id"] == 2
    finally:
        client.drop_collection(name)
        client.close()


def _redis_round_trip(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        assert client.ping() is True
        key = f"stack-test:{uuid.uuid4().hex}"
        client.set(key, "1", ex=60)
        assert client.get(key) == b"1"
    finally:
        client.close()


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_taken_kafka_port_fails_before_anything_starts(tmp_path):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        stack = LocalStack(data_dir=tmp_path, kafka_port=port, milvus_port=0, redis_port=0)
        with pytest.raises(StackError) as err:
            stack.up()
    message = err.value.message
    for needle in (f"port {port}", "stack.kafka_port", "PEDSEARCH_STACK__KAFKA_PORT=N",
                   "--kafka-port N"):
        assert needle in message
    assert not stack.state_path.exists()
    assert all(server.pid is None for server in stack.servers.values())


def test_taken_derived_milvus_port_is_named(tmp_path):
    with _listening_socket() as taken:
        etcd = taken.getsockname()[1]
        base = etcd - 2  # the embedded etcd listens on milvus_port + 2
        if base < 1:
            pytest.skip("the kernel gave a port too low to derive from")
        stack = LocalStack(data_dir=tmp_path, kafka_port=0, milvus_port=base, redis_port=0)
        with pytest.raises(StackError) as err:
            stack.up()
    assert f"port {etcd} (its etcd port, derived from stack.milvus_port)" in err.value.message
    assert "--milvus-port N" in err.value.message


def test_cli_reports_a_taken_port_and_exits_2(tmp_path, capsys):
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        code = pedsearch_main([
            "stack", "up", "--data-dir", str(tmp_path), "--kafka-port", "0",
            "--milvus-port", "0", "--redis-port", str(port),
        ])
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and str(port) in err
    assert "PEDSEARCH_STACK__REDIS_PORT" in " ".join(err.split())


@pytest.mark.integration
def test_state_file_names_every_started_process(tmp_path):
    """`status` and `down` work from the state file alone: it must carry pids, ports and logs."""
    with LocalStack(data_dir=tmp_path, kafka_port=0, milvus_port=0, redis_port=0,
                    start_timeout_s=START_TIMEOUT_S) as stack:
        raw = json.loads(stack.state_path.read_text())
        assert list(raw["services"]) == ["kafka", "milvus", "redis"]
        for name, svc in raw["services"].items():
            assert svc["pid"] == stack.servers[name].pid
            assert svc["ready_s"] is not None and svc["ready_s"] >= 0
            assert os.path.exists(svc["log"])
        assert len(raw["services"]["milvus"]["ports"]) == 12  # all derived, metrics included
        rows = stack.status()
        assert [(r.name, r.running, r.ready) for r in rows] == [
            ("kafka", True, True), ("milvus", True, True), ("redis", True, True)
        ]
        pids = [s.pid for s in stack.servers.values()]
    assert not stack.state_path.exists()
    assert not any(pid_alive(pid) for pid in pids)


@pytest.mark.integration
def test_fixtures_give_live_servers_and_private_names(settings, request):
    import redis
    from kafka import KafkaConsumer, KafkaProducer
    from pymilvus import MilvusClient

    assert settings.kafka.frames_topic.startswith("t_test_fixtures_give_live_servers")
    assert settings.kafka.max_poll_interval_ms <= 10_000
    assert settings.milvus.alias != "detections"
    assert os.environ["PEDSEARCH_MILVUS__URI"] == settings.milvus.uri  # code under test sees it too

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    producer.send(settings.kafka.frames_topic, b"x").get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        assert settings.kafka.frames_topic in consumer.topics()
    finally:
        consumer.close()

    client = MilvusClient(uri=settings.milvus.uri, timeout=30)
    try:
        assert isinstance(client.list_collections(), list)
    finally:
        client.close()
    assert redis.Redis.from_url(settings.redis.url).ping() is True


@pytest.mark.integration
def test_ray_local_runs_tasks(ray_local):
    import ray

    @ray.remote
    def square(x: int) -> int:
        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    assert ray.cluster_resources().get("CPU", 0) >= 1


@pytest.mark.integration
def test_milvus_restart_is_ready_only_once_collections_serve_again(tmp_path):
    """After a restart Milvus reloads loaded collections itself; ready means they answer again."""
    from pymilvus import DataType, MilvusClient

    from deploy.stack import MilvusServer

    server = MilvusServer(port=0, data_dir=tmp_path / "milvus")
    server.start()
    try:
        server.wait_ready(START_TIMEOUT_S)
        client = MilvusClient(uri=server.address, timeout=60)
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=4)
        index = client.prepare_index_params()
        index.add_index("vec", index_type="FLAT", metric_type="L2")
        client.create_collection("kept", schema=schema, index_params=index)
        client.insert("kept", [{"id": i, "vec": [float(i)] * 4} for i in range(10)])
        client.flush("kept")
        client.close()
        assert server.stop() is True

        port = server.port
        server.start()  # same data dir, same ports
        assert server.port == port
        details: list[str] = []
        server.wait_ready(START_TIMEOUT_S, progress=details.append)
        client = MilvusClient(uri=server.address, timeout=60)
        try:
            state = client.get_load_state("kept")["state"]
            assert state.name == "Loaded"
            # answers at once, at the collection's own consistency level
            count = client.query("kept", filter="", output_fields=["count(*)"], timeout=10)
            assert count[0]["count(*)"] == 10
        finally:
            client.close()
    finally:
        server.stop()


@pytest.mark.integration
def test_a_new_stack_forgets_the_workers_checkpoints_of_the_old_broker(redis_server):
    """Tansu starts every topic again at offset 0; checkpoints of the old broker would make the
    workers skip that many frames of the new one."""
    import redis

    from deploy.stack import forget_worker_checkpoints

    tag = uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(redis_server)
    try:
        client.set(f"pedsearch:state:g{tag}:frames:0", b"offset 1200")
        client.set(f"pedsearch:state:g{tag}:frames:1", b"offset 900")
        client.set(f"pedsearch:heartbeat:{tag}", b"kept")  # not a checkpoint
        assert forget_worker_checkpoints(redis_server) >= 2
        assert client.get(f"pedsearch:state:g{tag}:frames:0") is None
        assert client.get(f"pedsearch:state:g{tag}:frames:1") is None
        assert client.get(f"pedsearch:heartbeat:{tag}") == b"kept"
    finally:
        client.delete(f"pedsearch:heartbeat:{tag}")
        client.close()
