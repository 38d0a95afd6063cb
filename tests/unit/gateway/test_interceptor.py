"""The interceptor on a real in-process gRPC server with a servicer that fails on purpose:
pedsearch errors keep their codes and messages, anything else is INTERNAL (never UNKNOWN) with
the traceback logged, and errors in the middle of a stream end it with their code."""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
import pytest

from gateway.auth import TokenAuth
from gateway.interceptor import GatewayInterceptor
from gateway.status import ORIGIN_GATEWAY, ORIGIN_KEY, ResourceExhausted
from pedsearch.errors import InvalidInput, Unavailable
from pedsearch.v1 import search_pb2, search_pb2_grpc


class Failing(search_pb2_grpc.SearchServicer):
    def SearchText(self, request, context):
        if request.text == "bug":
            raise KeyError("a bug")
        if request.text == "busy":
            raise ResourceExhausted("slow down", retry_after_s=1.5)
        raise InvalidInput("text is wrong")

    def ListCameras(self, request, context):
        return search_pb2.ListCamerasResponse(model_version="v1")

    def Watch(self, request, context):
        yield search_pb2.WatchEvent(heartbeat=search_pb2.Heartbeat(scanned=0))
        raise Unavailable("redis went away")


class KeyLog:
    """A rate limiter that admits everything and records the client key of each request."""

    enabled = True

    def __init__(self) -> None:
        self.keys: list[str] = []

    def check(self, client: str) -> None:
        self.keys.append(client)


def serve(tokens, limiter=None):
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[
        GatewayInterceptor(auth=TokenAuth(tokens), limiter=limiter)])
    search_pb2_grpc.add_SearchServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return server, channel, search_pb2_grpc.SearchStub(channel)


@pytest.fixture
def open_stub():
    server, channel, stub = serve({})
    yield stub
    channel.close()
    server.stop(None)


def test_auth_runs_before_the_handler():
    server, channel, stub = serve({"t": ["ListCameras"]})
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub.SearchText(search_pb2.SearchTextRequest(text="bug"), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        resp = stub.ListCameras(search_pb2.ListCamerasRequest(), timeout=10,
                                metadata=(("authorization", "Bearer t"),))
        assert resp.model_version == "v1"
    finally:
        channel.close()
        server.stop(None)


def test_errors_become_their_status(open_stub, caplog):
    with pytest.raises(grpc.RpcError) as err:
        open_stub.SearchText(search_pb2.SearchTextRequest(text="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "text is wrong"
    with pytest.raises(grpc.RpcError) as err:
        open_stub.SearchText(search_pb2.SearchTextRequest(text="busy"), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata())["retry-after-ms"] == "1500"
    with caplog.at_level(logging.ERROR, logger="pedsearch.gateway"):
        with pytest.raises(grpc.RpcError) as err:
            open_stub.SearchText(search_pb2.SearchTextRequest(text="bug"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "KeyError" in err.value.details() and "a bug" not in err.value.details()
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)


def test_an_error_mid_stream_ends_it_with_its_code(open_stub):
    call = open_stub.Watch(search_pb2.WatchRequest(text="x"), timeout=10)
    assert next(call).WhichOneof("event") == "heartbeat"
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == "redis went away"


def test_gateway_errors_carry_their_origin_and_transport_errors_do_not(open_stub):
    with pytest.raises(grpc.RpcError) as err:
        open_stub.SearchText(search_pb2.SearchTextRequest(text="x"), timeout=10)
    assert dict(err.value.trailing_metadata())[ORIGIN_KEY] == ORIGIN_GATEWAY
    channel = grpc.insecure_channel("127.0.0.1:1")  # nobody listens there
    try:
        with pytest.raises(grpc.RpcError) as err:
            search_pb2_grpc.SearchStub(channel).ListCameras(search_pb2.ListCamerasRequest(),
                                                            timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ORIGIN_KEY not in dict(err.value.trailing_metadata() or ())
    finally:
        channel.close()


def test_bytes_that_are_not_the_request_message_are_invalid_argument():
    server, channel, _stub = serve({})
    try:
        raw = channel.unary_unary("/pedsearch.v1.Search/SearchText")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\x0a\x02\xff\xfe", timeout=10)  # field 1 (text): invalid UTF-8
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid protobuf message" in err.value.details()
    finally:
        channel.close()
        server.stop(None)


@pytest.mark.parametrize("tokens, distinct", [({}, 1), ({"t-a": ["*"], "t-b": ["*"]}, 2)])
def test_the_rate_limit_keys_on_a_token_only_when_auth_checked_it(tokens, distinct):
    """With auth off a token is whatever the caller sends: made-up ones must not buy fresh
    buckets, so the peer is the client; with auth on each verified token has its own."""
    log = KeyLog()
    server, channel, stub = serve(tokens, limiter=log)
    try:
        for token in ("t-a", "t-b"):
            stub.ListCameras(search_pb2.ListCamerasRequest(), timeout=10,
                             metadata=(("authorization", f"Bearer {token}"),))
    finally:
        channel.close()
        server.stop(None)
    assert len(log.keys) == 2 and len(set(log.keys)) == distinct
    if not tokens:
        assert log.keys == ["peer:127.0.0.1"] * 2
    else:
        assert all(k.startswith("token:") for k in log.keys)
