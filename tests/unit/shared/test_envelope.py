"""Frame envelope validation: every kind of bad message gets its own dead-letter reason."""

import time

import numpy as np
import pytest

from pedsearch.envelope import PoisonMessage, decode_frame, make_frame
from pedsearch.errors import InvalidInput

MAX = 1 << 20


def _image(h=48, w=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _frame(**kw):
    return make_frame(camera_id=kw.pop("camera_id", "cam-1"), seq=3, image=_image(), **kw)


def test_round_trip():
    f = _frame(source="file:x")
    d = decode_frame(f.SerializeToString(), key=b"cam-1", max_bytes=MAX)
    assert d.camera_id == "cam-1" and d.frame.seq == 3
    assert d.image.shape == (48, 64, 3)
    assert abs(d.frame.capture_ts_us / 1e6 - time.time()) < 60


def _reason(value, key=b"cam-1", max_bytes=MAX):
    with pytest.raises(PoisonMessage) as info:
        decode_frame(value, key=key, max_bytes=max_bytes)
    return info.value.reason


def test_poison_reasons():
    good = _frame()
    assert _reason(b"") == "empty"
    assert _reason(None) == "empty"
    assert _reason(good.SerializeToString(), max_bytes=100) == "too_large"
    assert _reason(b"\xff\xff\xff\xff garbage") == "undecodable"
    f = _frame(); f.format_version = 99
    assert _reason(f.SerializeToString()) == "bad_version"
    f = _frame(); f.camera_id = "bad id with spaces"
    assert _reason(f.SerializeToString(), key=None) == "bad_camera_id"
    assert _reason(good.SerializeToString(), key=b"other") == "key_mismatch"
    f = _frame(); f.width = 100000
    assert _reason(f.SerializeToString()) == "bad_size"
    f = _frame(); f.capture_ts_us = -5
    assert _reason(f.SerializeToString()) == "bad_timestamp"
    f = _frame(); f.jpeg = b""
    assert _reason(f.SerializeToString()) == "no_image"
    f = _frame(); f.jpeg = b"\xff\xd8 not really a jpeg"
    assert _reason(f.SerializeToString()) == "corrupt_jpeg"
    f = _frame(); f.width = 32
    assert _reason(f.SerializeToString()) == "size_mismatch"


def test_bad_camera_id_on_the_camera_side():
    with pytest.raises(InvalidInput, match="camera id"):
        make_frame(camera_id="", seq=0, image=_image())
    # "$" would match before the newline: the id must match as a whole
    with pytest.raises(InvalidInput, match="camera id"):
        make_frame(camera_id="gate-3\n", seq=0, image=_image())


def test_a_camera_id_with_a_trailing_newline_is_poison():
    f = _frame(); f.camera_id = "cam-1\n"
    assert _reason(f.SerializeToString(), key=None) == "bad_camera_id"
