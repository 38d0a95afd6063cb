"""`pedsearch search` / `watch` and the client against an in-process gateway that answers from
memory: the bearer token as sent, addresses with a scheme, why a watch ended, contact sheets with
a crop that cannot be read, and output paths that look like rich markup."""

from __future__ import annotations

import argparse
import datetime as dt
import re
from concurrent import futures

import cv2
import grpc
import numpy as np
import pytest

from gateway import client_cli
from gateway.client import check_address, clean_token, connect
from gateway.status import WATCH_DURATION_KEY, WATCH_MAX_KEY
from pedsearch.config import GatewayConfig
from pedsearch.errors import InvalidInput
from pedsearch.v1 import frame_pb2, search_pb2, search_pb2_grpc

TS_US = 1_800_000_000_000_000


def _detection(i: int) -> frame_pb2.Detection:
    return frame_pb2.Detection(id=100 + i, camera_id="gate-3", ts_us=TS_US + i, track_id=i,
                               det_score=0.9, crop_ref=f"gate-3/2027011508/{100 + i}.jpg",
                               model_version="v1")


class Fake(search_pb2_grpc.SearchServicer):
    """Three hits; crop 101 is readable, 102 is unreadable in the store (the gateway answers
    FAILED_PRECONDITION), 103 is stored bytes that are no image. A watch sends its duration
    and cap as the gateway does, one heartbeat, and ends: its duration ran out."""

    def __init__(self, *, watch_duration: int = 600, watch_max: int = 3600) -> None:
        self.watch_duration, self.watch_max = watch_duration, watch_max
        self.limited = 0  # searches answered RESOURCE_EXHAUSTED before one is served
        self.authorization: list[str | None] = []

    def SearchText(self, request, context):
        self.authorization.append(dict(context.invocation_metadata()).get("authorization"))
        if self.limited:
            self.limited -= 1
            context.set_trailing_metadata((("retry-after-ms", "50"),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit: retry in 0.05 s")
        return search_pb2.SearchResponse(
            hits=[search_pb2.Hit(score=0.9 - i / 10, detection=_detection(i)) for i in (1, 2, 3)],
            model_version="v1", collection="detections_v1")

    def GetDetection(self, request, context):
        if request.id == 102:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "detection 102 exists but its crop cannot be read: Permission denied")
        crop = (cv2.imencode(".jpg", np.full((64, 32, 3), 90, np.uint8))[1].tobytes()
                if request.id == 101 else b"not a jpeg")
        return search_pb2.GetDetectionResponse(detection=_detection(request.id - 100),
                                               crop_jpeg=crop)

    def Watch(self, request, context):
        import time

        from gateway.convert import parse_filter, watch_duration

        granted = watch_duration(request.max_duration_s, parse_filter(request.filter),
                                 int(time.time() * 1e6), default_s=self.watch_duration,
                                 cap_s=self.watch_max)
        context.send_initial_metadata(((WATCH_DURATION_KEY, str(granted)),
                                       (WATCH_MAX_KEY, str(self.watch_max))))
        yield search_pb2.WatchEvent(heartbeat=search_pb2.Heartbeat(scanned=0))


@pytest.fixture
def gateway():
    fake = Fake()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    search_pb2_grpc.add_SearchServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(None)


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="pedsearch")
    ap.add_argument("--config", default=None)
    client_cli.register(ap.add_subparsers(dest="command"))
    args = ap.parse_args(list(argv))
    return args.handler(args)


# -- the bearer token ------------------------------------------------------------------------
def test_a_token_read_with_its_newline_is_sent_without_it(gateway):
    fake, address = gateway
    with connect(address, token="s3cret\n") as gw:
        gw.search_text("a man")
    assert fake.authorization == ["Bearer s3cret"]
    assert clean_token("  t \r\n") == "t" and clean_token(" \n") is None
    assert clean_token(None) is None and clean_token("a b~") == "a b~"


@pytest.mark.parametrize("token, where", [("s3c\nret", "U+000A at position 4"),
                                          ("s3c\x00ret", "U+0000 at position 4"),
                                          ("s3crét", "U+00E9 'é' at position 5"),
                                          ("tab\tin", "U+0009 at position 4")])
def test_a_token_a_header_cannot_carry_is_refused_before_connecting(token, where):
    # 127.0.0.1:1: nobody listens; the token is refused first, and not echoed (a secret)
    with pytest.raises(InvalidInput, match=r"--token or \$PEDSEARCH_TOKEN") as err:
        connect("127.0.0.1:1", token=token)
    assert where in err.value.message and token not in err.value.message


# -- the address -----------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["http://127.0.0.1:50051", "grpc://gw:50051",
                                     "https://gw.example:443"])
def test_an_address_with_a_scheme_is_refused_by_name(address):
    with pytest.raises(InvalidInput, match="give HOST:PORT without http://"):
        check_address(address)
    with pytest.raises(InvalidInput, match="without http://"):
        connect(address)


def test_host_port_addresses_pass():
    for address in ("127.0.0.1:50051", "[::1]:50051", "gw.example:443"):
        assert check_address(address) == address
    with pytest.raises(InvalidInput, match="must be host:port"):
        check_address("gw.example")
    with pytest.raises(InvalidInput, match="port 70000 is not 1..65535"):
        check_address("gw.example:70000")


def test_a_configured_port_0_asks_for_the_port_the_gateway_took(tmp_path):
    """``gateway.address: 127.0.0.1:0`` (a free port) was reported as "must be host:port"."""
    (tmp_path / "c.yaml").write_text("gateway:\n  address: 127.0.0.1:0\n")
    args = argparse.Namespace(gateway=None, config=str(tmp_path / "c.yaml"))
    with pytest.raises(InvalidInput, match="has port 0 .* with --gateway HOST:PORT"):
        client_cli.gateway_address(args)


def test_a_search_held_back_briefly_by_the_rate_limit_waits_and_is_answered(gateway, capsys):
    """The README: exit 1 only when the limit held the request back longer than 5 s."""
    fake, address = gateway
    fake.limited = 2
    assert run_cli("search", "a man", "--gateway", address, "--sheet", "0") == 0
    assert fake.limited == 0 and "3 hits" in capsys.readouterr().out


# -- watch -----------------------------------------------------------------------------------
def test_a_watch_that_runs_out_of_time_says_so(gateway, capsys):
    _fake, address = gateway
    assert run_cli("watch", "a man", "--threshold", "0.5", "--gateway", address) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"at {address} for 600 s; Ctrl-C to stop" in out
    assert ("the watch ended after its 600 s (the gateway's default; --duration sets another, "
            "the gateway allows at most 3600 s), with 0 match(es)") in out


def test_a_watch_longer_than_the_gateway_allows_is_told_its_cap(gateway, capsys):
    _fake, address = gateway
    assert run_cli("watch", "a man", "--threshold", "0.5", "--duration", "7200",
                   "--gateway", address) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "for 3600 s (--duration 7200 is beyond this gateway's limit of 3600 s)" in out
    assert "the watch ended after its 3600 s (--duration; the gateway allows at most 3600 s)" \
        in out


def test_a_watch_is_told_it_ends_with_its_time_range(gateway, capsys):
    """Nothing captured after --until can match: the gateway ends the watch a minute after
    it, and the CLI says that is why, not that the gateway's limit was reached."""
    from gateway.convert import WATCH_UNTIL_GRACE_S

    assert client_cli.WATCH_UNTIL_GRACE_S == WATCH_UNTIL_GRACE_S
    _fake, address = gateway
    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).isoformat()
    assert run_cli("watch", "a man", "--threshold", "0.5", "--until", until,
                   "--duration", "3600", "--gateway", address) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert re.search(r"for 3[56]\d s \(until --until, and a minute for its last detections\)",
                     out), out
    assert "(its time range ended at --until), with 0 match(es)" in out


@pytest.mark.parametrize("until", ["10m", "now", "2020-01-01T00:00:00Z"])
def test_a_watch_whose_time_range_has_ended_is_refused(until, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("watch", "a man", "--threshold", "0.5", "--until", until,
                "--gateway", "127.0.0.1:1")
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert ("a watch sees only new detections; its time range must end in the future"
            in err)


def test_help_states_the_watch_duration_and_its_own_attr_meaning(capsys):
    gw = GatewayConfig()
    assert (client_cli.WATCH_DEFAULT_S, client_cli.WATCH_MAX_S) == (gw.watch_default_s,
                                                                    gw.watch_max_s)
    with pytest.raises(SystemExit):
        run_cli("watch", "--help")
    watch_help = " ".join(capsys.readouterr().out.split())
    assert "600 s" in watch_help and "3600 s" in watch_help
    assert "re-ranks its hits" not in watch_help and "a watch is one kind of query" in watch_help
    with pytest.raises(SystemExit):
        run_cli("search", "--help")
    assert "re-ranks its hits" in " ".join(capsys.readouterr().out.split())


# -- search: the contact sheet and its paths ---------------------------------------------------
def test_an_unreadable_crop_is_a_placeholder_and_a_markup_like_out_path_prints(gateway,
                                                                                tmp_path, capsys):
    _fake, address = gateway
    out = tmp_path / "o[/x]" / "[bold]sheet"
    assert run_cli("search", "a man", "--gateway", address, "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert (out / "contact_sheet.html").is_file() and (out / "contact_sheet.png").is_file()
    assert f"contact sheet: {out / 'contact_sheet.html'}" in "".join(captured.out.splitlines())
    err = " ".join(captured.err.split())
    assert "2 of 3 crops could not be fetched or read" in err
    assert "#2 (id 102): detection 102 exists but its crop cannot be read" in err
    assert "#3 (id 103): the stored crop is not a readable image" in err
