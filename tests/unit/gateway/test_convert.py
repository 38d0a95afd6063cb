"""Request checking and response building of the gateway."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest

from gateway.convert import (
    FilterParams,
    add_hits,
    decode_image,
    detection_proto,
    finite,
    hit_proto,
    image_size,
    parse_constraints,
    parse_filter,
    skip_tracks,
    top_k,
    watch_filter,
)
from gateway.search import Hit
from gateway.status import code_for
from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from pedsearch.v1 import search_pb2

SCHEMA = AttributeSchema.default()
AC = search_pb2.AttributeConstraint


def test_top_k():
    assert top_k(0) == 10 and top_k(1) == 1 and top_k(1000) == 1000
    for bad in (1001, 2**32 - 1):
        with pytest.raises(InvalidInput, match="top_k must be 1..1000"):
            top_k(bad)


def test_finite_refuses_nan_and_infinities():
    assert finite(0.25, "x") == 0.25
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(InvalidInput, match="x must be a finite number"):
            finite(bad, "x")
    with pytest.raises(InvalidInput, match="in \\[-1, 1\\]"):
        finite(2.0, "x", low=-1, high=1)


def test_parse_filter():
    f = parse_filter(search_pb2.Filter(camera_ids=["a", "b", "a"], since_us=1, until_us=1,
                                       min_score=0.5))
    assert f == FilterParams(("a", "b"), 1, 1, 0.5)
    assert parse_filter(search_pb2.Filter()) == FilterParams()
    assert parse_filter(search_pb2.Filter(since_us=0)).since_us == 0  # set, not absent
    with pytest.raises(InvalidInput, match="inverted"):
        parse_filter(search_pb2.Filter(since_us=2, until_us=1))
    with pytest.raises(InvalidInput, match="not a camera id"):
        parse_filter(search_pb2.Filter(camera_ids=["bad id"]))
    with pytest.raises(InvalidInput, match="min_score"):
        parse_filter(search_pb2.Filter(min_score=float("nan")))
    with pytest.raises(InvalidInput, match="at most 1000"):
        parse_filter(search_pb2.Filter(camera_ids=[f"c{i}" for i in range(1001)]))


def test_a_camera_id_with_a_trailing_newline_is_refused():
    """``$`` matches before a final newline: 'gate-3\\n' would pass the check and then break
    the Milvus filter it is quoted into, answered as UNAVAILABLE instead of INVALID_ARGUMENT."""
    with pytest.raises(InvalidInput, match=r"filter.camera_ids: 'gate-3\\n' is not a camera id"):
        parse_filter(search_pb2.Filter(camera_ids=["gate-3\n"]))
    with pytest.raises(InvalidInput, match=r"skip_tracks\[0\].camera_id 'gate-3\\n'"):
        skip_tracks([search_pb2.TrackRef(camera_id="gate-3\n", track_id=1)])
    assert code_for(InvalidInput("x")) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_watch_time_range_must_end_in_the_future():
    now = 1_800_000_000_000_000
    assert watch_filter(search_pb2.Filter(until_us=now + 1), now).until_us == now + 1
    assert watch_filter(search_pb2.Filter(since_us=now - 10**9), now).since_us == now - 10**9
    for until in (now, now - 60 * 10**6, 0):
        with pytest.raises(InvalidInput, match="a watch sees only new detections; its time "
                                               "range must end in the future"):
            watch_filter(search_pb2.Filter(until_us=until), now)
    with pytest.raises(InvalidInput, match="inverted"):  # the search checks still apply
        watch_filter(search_pb2.Filter(since_us=now + 2, until_us=now + 1), now)


def test_skip_tracks():
    refs = [search_pb2.TrackRef(camera_id="gate-3", track_id=17),
            search_pb2.TrackRef(camera_id="gate-3", track_id=17),
            search_pb2.TrackRef(camera_id="lobby", track_id=-2)]
    assert skip_tracks(refs) == {("gate-3", 17), ("lobby", -2)}
    assert skip_tracks([]) == frozenset()
    with pytest.raises(InvalidInput, match=r"skip_tracks\[0\].camera_id '' is not a camera id"):
        skip_tracks([search_pb2.TrackRef(track_id=1)])
    with pytest.raises(InvalidInput, match="101 tracks; at most 100"):
        skip_tracks([search_pb2.TrackRef(camera_id="c", track_id=i) for i in range(101)])


def test_filter_admits():
    f = FilterParams(("a",), 10, 20)
    assert f.admits("a", 10) and f.admits("a", 20)
    assert not f.admits("b", 15) and not f.admits("a", 9) and not f.admits("a", 21)
    assert FilterParams().admits("anything", -5)


def test_parse_constraints_modes():
    msgs = [AC(family="upper_color", values=["red"]),
            AC(family="hat", values=["yes"], mode=AC.HARD, min_probability=0.9),
            AC(family="gender", values=["woman"], mode=AC.SOFT)]
    soft = parse_constraints(SCHEMA, msgs, unspecified="soft")
    assert [(c.family, c.values, c.mode) for c in soft] == [
        ("upper_color", ("red",), "soft"), ("hat", ("yes",), "hard"),
        ("gender", ("female",), "soft")]
    assert soft[1].min_probability == pytest.approx(0.9)
    assert parse_constraints(SCHEMA, msgs[:1], unspecified="query")[0].mode == "query"
    with pytest.raises(InvalidInput, match=r"constraints\[0\]\.mode 5"):
        parse_constraints(SCHEMA, [AC(family="hat", values=["yes"], mode=5)], unspecified="soft")
    with pytest.raises(InvalidInput, match=r"constraints\[1\]: unknown attribute"):
        parse_constraints(SCHEMA, [msgs[0], AC(family="x", values=["y"])], unspecified="soft")
    with pytest.raises(InvalidInput, match="min_probability must be in"):
        parse_constraints(SCHEMA, [AC(family="hat", values=["yes"], min_probability=0.0)],
                          unspecified="soft")


def _jpeg(h, w):
    return cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


def test_image_size_reads_headers_only():
    assert image_size(_jpeg(37, 21)) == (21, 37)
    png = cv2.imencode(".png", np.zeros((13, 44, 3), np.uint8))[1].tobytes()
    assert image_size(png) == (44, 13)
    for bad, msg in ((b"GIF89a....", "JPEG or PNG"), (b"\x89PNG\r\n\x1a\n", "truncated PNG"),
                     (b"\xff\xd8\xff\xe0\x00\x10", "truncated JPEG"),
                     (b"\xff\xd8\x00\x00\x00\x00", "bad marker")):
        with pytest.raises(InvalidInput, match=msg):
            image_size(bad)


def test_decode_image():
    img = decode_image(_jpeg(64, 32))
    assert img.shape == (64, 32, 3) and img.dtype == np.uint8
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"")
    with pytest.raises(InvalidInput, match="each side must be >= 8"):
        decode_image(_jpeg(4, 40))
    bomb = bytearray(cv2.imencode(".png", np.zeros((10, 10, 3), np.uint8))[1].tobytes())
    bomb[16:24] = (50_000).to_bytes(4, "big") * 2
    with pytest.raises(InvalidInput, match="at most 40,000,000 pixels"):
        decode_image(bytes(bomb))
    # a frame header that passes the size checks, then no image data
    header_only = b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x40\x00\x20" + bytes(20)
    with pytest.raises(InvalidInput, match="cannot be decoded"):
        decode_image(header_only)


def test_detection_proto_keys_attributes_by_family_value():
    fields = SCHEMA.field_names()
    hit = Hit(id=-5, score=0.5, camera_id="c", ts_us=7, track_id=3, frame_seq=4,
              box=(1.0, 2.0, 3.0, 4.0), crop_ref="c/2026010100/-5.jpg", model_version="v1",
              attributes={f: i / 100 for i, f in enumerate(fields)}, det_score=0.9)
    d = detection_proto(hit, SCHEMA)
    assert d.id == -5 and d.box.h == 4.0 and d.frame_seq == 4
    assert d.attributes["gender=male"] == pytest.approx(0.0)
    assert d.attributes["upper_color=red"] == pytest.approx(fields.index(
        "attr_upper_color_red") / 100)
    assert len(d.attributes) == SCHEMA.dim


def test_add_hits_fills_the_reply_in_order_and_skips_unknown_fields():
    fields = SCHEMA.field_names()
    hits = [Hit(id=i, score=1.0 - i / 10, camera_id=f"cam-{i}", ts_us=100 + i, track_id=i,
                frame_seq=-1 if i == 0 else i, box=(float(i), 2.0, 3.0, 4.0),
                crop_ref=f"c/{i}.jpg", model_version="v1", det_score=0.5,
                attributes={**{f: 0.25 for f in fields}, "attr_not_in_schema": 0.9})
            for i in range(3)]
    reply = search_pb2.SearchResponse(model_version="v1")
    add_hits(reply.hits, hits, SCHEMA)
    assert [h.score for h in reply.hits] == pytest.approx([1.0, 0.9, 0.8])
    assert [h.detection.camera_id for h in reply.hits] == ["cam-0", "cam-1", "cam-2"]
    first = reply.hits[0].detection
    assert first.frame_seq == 0 and first.box.x == 0.0 and first.crop_ref == "c/0.jpg"
    assert len(first.attributes) == SCHEMA.dim  # the unknown field is not a label
    assert set(first.attributes.values()) == {0.25}
    # the standalone message of a watch event is the same hit
    assert hit_proto(hits[1], SCHEMA) == reply.hits[1]


def test_the_python_client_reads_one_camera_given_as_a_string_as_that_camera():
    """``search_text(..., cameras="cam1")`` filtered on the cameras c, a, m and 1."""
    from gateway.client import _filter

    assert list(_filter("cam1", None, None, None).camera_ids) == ["cam1"]
    assert list(_filter(["cam1", "cam2"], None, None, None).camera_ids) == ["cam1", "cam2"]


def test_a_watch_with_a_time_range_ends_a_minute_after_it():
    """``watch --until <in 5 min> --duration 3600`` held a stream for 55 minutes in which
    nothing could match."""
    from gateway.convert import WATCH_UNTIL_GRACE_S, watch_duration

    now = 1_800_000_000 * 10**6
    open_ended = FilterParams()
    assert watch_duration(0, open_ended, now, default_s=600, cap_s=3600) == 600
    assert watch_duration(7200, open_ended, now, default_s=600, cap_s=3600) == 3600
    five_min = FilterParams(until_us=now + 300 * 10**6)
    assert watch_duration(3600, five_min, now, default_s=600,
                          cap_s=3600) == 300 + WATCH_UNTIL_GRACE_S
    assert watch_duration(100, five_min, now, default_s=600, cap_s=3600) == 100
