"""Bearer tokens, the rate limiter's client keys and the error -> status code table."""

from __future__ import annotations

import grpc
import pytest

from gateway.auth import TokenAuth, bearer_token, is_open, method_name
from gateway.ratelimit import client_key
from gateway.status import (
    DeadlineExceeded,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    code_for,
)
from pedsearch.errors import BundleError, InvalidInput, NotFound, NotReady, Unavailable

SEARCH = "/pedsearch.v1.Search/SearchText"


def test_bearer_token_parsing():
    assert bearer_token([("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("Authorization", b"bearer  xyz ")]) == "xyz"
    assert bearer_token([("authorization", "Basic abc")]) is None
    assert bearer_token([("authorization", "Bearer ")]) is None
    assert bearer_token(None) is None


def test_token_auth():
    auth = TokenAuth({"admin": ["*"], "cams": ["ListCameras"]})
    auth.check(SEARCH, "admin")
    auth.check("/pedsearch.v1.Search/ListCameras", "cams")
    with pytest.raises(Unauthenticated, match="requires a bearer token"):
        auth.check(SEARCH, None)
    with pytest.raises(Unauthenticated, match="not known"):
        auth.check(SEARCH, "nope")
    with pytest.raises(PermissionDenied, match="may not call SearchText; it may call "
                                               "ListCameras"):
        auth.check(SEARCH, "cams")
    # health and reflection stay open; no tokens = no auth
    auth.check("/grpc.health.v1.Health/Check", None)
    auth.check("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None)
    TokenAuth({}).check(SEARCH, None)
    assert method_name(SEARCH) == "SearchText" and is_open("/grpc.health.v1.Health/Watch")


def test_client_key():
    assert client_key(None, "ipv4:10.0.0.7:51234") == "peer:10.0.0.7"
    assert client_key(None, "ipv6:[::1]:51234") == "peer:[::1]"
    # what grpc reports for an IPv6 client: without decoding, each connection (port) got a
    # bucket of its own and the limit was never reached
    assert client_key(None, "ipv6:%5B::1%5D:51234") == "peer:[::1]"
    assert client_key(None, "ipv6:%5B::1%5D:40000") == "peer:[::1]"
    assert client_key(None, "unix:/tmp/sock") == "peer:unix:/tmp/sock"
    key = client_key("secret-token", "ipv4:10.0.0.7:1")
    assert key.startswith("token:") and "secret" not in key
    assert key == client_key("secret-token", "ipv4:10.9.9.9:2")


@pytest.mark.parametrize("exc, code", [
    (InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (NotReady("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (BundleError("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhausted("x", 1.0), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (KeyError("bug"), grpc.StatusCode.INTERNAL),
])
def test_code_for(exc, code):
    assert code_for(exc) == code
