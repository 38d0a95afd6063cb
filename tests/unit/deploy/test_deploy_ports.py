"""Port derivation, probing and the taken-port message of the embedded stack."""

from __future__ import annotations

import random
import socket

import pytest

from deploy import _ports
from pedsearch.errors import ConfigError


def test_milvus_ports_derive_every_role_from_the_proxy_port():
    ports = _ports.milvus_ports(19530)
    assert list(ports)[0] == "proxy" and ports["proxy"] == 19530
    assert sorted(ports.values()) == list(range(19530, 19530 + _ports.MILVUS_PORT_SPAN))
    assert ports["etcd"] == 19532 and ports["etcd_peer"] == 19533


def test_two_milvus_servers_eleven_apart_share_no_port():
    a, b = _ports.milvus_ports(19530), _ports.milvus_ports(19530 + _ports.MILVUS_PORT_SPAN)
    assert not set(a.values()) & set(b.values())


@pytest.mark.parametrize("port", [0, -1, 65535 - _ports.MILVUS_PORT_SPAN + 2, 70000])
def test_milvus_port_without_room_for_the_block_is_a_config_error(port):
    with pytest.raises(ConfigError, match="stack.milvus_port"):
        _ports.milvus_ports(port)


def test_highest_milvus_port_still_fits():
    top = 65535 - _ports.MILVUS_PORT_SPAN + 1
    assert max(_ports.milvus_ports(top).values()) == 65535


def test_listening_port_is_in_use_and_closed_one_is_not():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert _ports.port_in_use("127.0.0.1", port)
        assert _ports.port_in_use("0.0.0.0", port)
    assert not _ports.port_in_use("127.0.0.1", port)


def test_free_port_block_is_free_and_below_the_ephemeral_range():
    base = _ports.free_port_block("127.0.0.1", 11, rng=random.Random(0))
    assert _ports.BLOCK_LOW <= base and base + 11 <= _ports.BLOCK_HIGH
    assert not any(_ports.port_in_use("127.0.0.1", base + i) for i in range(11))


def test_free_port_is_bindable():
    port = _ports.free_port("127.0.0.1")
    assert 0 < port < 65536 and not _ports.port_in_use("127.0.0.1", port)


def test_taken_port_message_names_port_key_env_and_flag():
    msg = _ports.port_taken_message(
        service="Redis", port=16379, host="127.0.0.1", config_key="stack.redis_port",
        flag="--redis-port",
    )
    for needle in ("port 16379", "stack.redis_port: N", "PEDSEARCH_STACK__REDIS_PORT=N",
                   "pedsearch stack up --redis-port N", "0 picks free ports"):
        assert needle in msg


def test_taken_derived_port_message_says_where_it_comes_from():
    msg = _ports.port_taken_message(
        service="Milvus", port=19532, host="127.0.0.1", config_key="stack.milvus_port",
        flag="--milvus-port", role="etcd",
    )
    assert "port 19532 (its etcd port, derived from stack.milvus_port)" in msg


@pytest.mark.parametrize(("host", "dial"), [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"),
                                            ("::", "::1"), ("10.0.0.5", "10.0.0.5")])
def test_wildcard_hosts_are_dialled_on_loopback(host, dial):
    assert _ports.connect_host(host) == dial


def test_free_port_blocks_avoid_ports_already_given_out():
    base = _ports.free_port_block("127.0.0.1", 11, rng=random.Random(0))
    again = _ports.free_port_block("127.0.0.1", 11, rng=random.Random(0), avoid={base + 5})
    assert not again <= base + 5 < again + 11
