"""The client's pure parts: time and attribute arguments, and gRPC status -> pedsearch error."""

from __future__ import annotations

import argparse

import grpc
import pytest

from gateway.client import Constraint, constraints_of, error_from_rpc, parse_constraint
from gateway.client_cli import parse_time
from gateway.status import ORIGIN_GATEWAY, ORIGIN_KEY, code_for
from pedsearch.errors import (
    AccessDenied,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    NotReady,
    PedsearchError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize("text, expected_s", [
    ("now", NOW), ("10m", NOW - 600), ("2h", NOW - 7200), ("1.5d", NOW - 1.5 * 86400),
    ("30s ago", NOW - 30), ("1w", NOW - 7 * 86400),
    ("2027-01-15T08:00:00Z", 1_800_000_000 - 1_800_000_000 % 86400 + 8 * 3600),
    ("2027-01-15 08:00", 1_800_000_000 - 1_800_000_000 % 86400 + 8 * 3600),
    ("2027-01-15T09:00:00+01:00", 1_800_000_000 - 1_800_000_000 % 86400 + 8 * 3600),
])
def test_parse_time(text, expected_s):
    assert parse_time(text, now=NOW) == int(expected_s * 1e6)


@pytest.mark.parametrize("text", ["yesterday", "10 parsecs", "-5m", "", "2027-13-01"])
def test_parse_time_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        parse_time(text, now=NOW)


def test_parse_constraint():
    assert parse_constraint("upper_color=red") == Constraint("upper_color", ("red",))
    assert parse_constraint(" bag = backpack, handbag ", "hard") == Constraint(
        "bag", ("backpack", "handbag"), "hard")
    for bad in ("upper_color", "=red", "upper_color=", "upper_color=,"):
        with pytest.raises(InvalidInput, match="family=value"):
            parse_constraint(bad)


def test_constraints_of_mapping_and_modes():
    cs = constraints_of({"gender": "female", "bag": ["backpack", "handbag"]}, mode="hard")
    assert [c.to_proto().mode for c in cs] == [2, 2]
    assert list(cs[1].to_proto().values) == ["backpack", "handbag"]
    with pytest.raises(InvalidInput, match="soft or hard"):
        Constraint("gender", ("female",), mode="firm").to_proto()


class _Failed(grpc.RpcError):
    """What a failed unary call raises: an RpcError with code() and details()."""

    def __init__(self, code, details, trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


S = grpc.StatusCode


@pytest.mark.parametrize("code, details, cls, words", [
    (S.INVALID_ARGUMENT, "top_k must be 1..1000, got 0", InvalidInput, "top_k must be"),
    (S.NOT_FOUND, "no detection with id 7", NotFound, "id 7"),
    (S.FAILED_PRECONDITION, "nothing indexed yet", NotReady, "nothing indexed"),
    (S.UNAUTHENTICATED, "missing token", Unauthenticated, "pass --token"),
    (S.PERMISSION_DENIED, "token may not call Watch", PermissionDenied, "allowed to call"),
    (S.RESOURCE_EXHAUSTED, "rate limit", ResourceExhausted, "retry"),
    (S.DEADLINE_EXCEEDED, "Deadline Exceeded", DeadlineExceeded, "in time"),
    (S.UNAVAILABLE, "failed to connect to all addresses", Unavailable,
     "start it with `pedsearch gateway serve`"),
    (S.UNAVAILABLE, "Milvus at http://m:19530 failed", Unavailable, "answered UNAVAILABLE"),
    # the gateway's own message may read like a refused connection: its trailer decides
    (S.UNAVAILABLE, "Redis at redis://r:6379/0 cannot be read: Connection refused.", Unavailable,
     "answered UNAVAILABLE: Redis"),
    (S.INTERNAL, "boom", PedsearchError, "INTERNAL"),
])
def test_error_from_rpc(code, details, cls, words):
    from_gateway = "failed to connect" not in details
    trailer = ((ORIGIN_KEY, ORIGIN_GATEWAY),) if from_gateway else ()
    err = error_from_rpc(_Failed(code, details, trailer), "gw:50051")
    assert type(err) is cls
    assert words in err.message and err.status == code
    if cls is not PedsearchError:
        # the client raises the classes the gateway raises: they map back to the same code
        assert code_for(err) == code


def test_refusals_share_a_base_and_retryable_errors_are_unavailable():
    assert issubclass(Unauthenticated, AccessDenied) and issubclass(PermissionDenied, AccessDenied)
    assert issubclass(ResourceExhausted, Unavailable) and issubclass(DeadlineExceeded, Unavailable)


def test_a_ca_file_that_is_not_pem_is_named(tmp_path):
    from gateway.client import connect

    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(InvalidInput, match="holds no PEM certificate"):
        connect("127.0.0.1:1", tls_ca=not_pem)


def test_search_help_ends_with_the_examples(capsys):
    from gateway.client_cli import register

    ap = argparse.ArgumentParser(prog="pedsearch")
    register(ap.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        ap.parse_args(["search", "--help"])
    out = capsys.readouterr().out
    assert out.rstrip().endswith("pedsearch cameras")
    assert "examples:\n    pedsearch search \"a man in a grey hoodie" in out
