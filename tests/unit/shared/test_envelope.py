"""Frame envelope validation: every kind of bad message gets its own dead-letter reason."""

import time

import numpy as np
import pytest

from pedsearch.envelope import PoisonMessage, decode_frame, encode_jpeg, jpeg_size, make_frame
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


def _reason(value, key=b"cam-1", max_bytes=MAX, require_key=False):
    with pytest.raises(PoisonMessage) as info:
        decode_frame(value, key=key, max_bytes=max_bytes, require_key=require_key)
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
    assert _reason(good.SerializeToString(), key=None, require_key=True) == "missing_key"
    assert _reason(good.SerializeToString(), key=b"", require_key=True) == "missing_key"
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


def test_the_kafka_key_is_required_from_kafka_only():
    value = _frame().SerializeToString()
    assert decode_frame(value, key=b"cam-1", max_bytes=MAX, require_key=True).camera_id == "cam-1"
    # frames that never went through Kafka (benchmarks, tests) have no key to check
    assert decode_frame(value, key=None, max_bytes=MAX).camera_id == "cam-1"


def _with_sof_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(jpeg)
    i = data.find(b"\xff\xc0")  # marker, length(2), precision(1), height(2), width(2)
    data[i + 5:i + 7] = height.to_bytes(2, "big")
    data[i + 7:i + 9] = width.to_bytes(2, "big")
    return bytes(data)


def test_a_jpeg_claiming_a_huge_size_is_refused_before_decoding(monkeypatch):
    import cv2

    # 700 bytes that would make the decoder allocate 12000 x 12000 x 3 bytes
    f = _frame()
    f.jpeg = _with_sof_size(f.jpeg, 12000, 12000)
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1))
    assert _reason(f.SerializeToString()) == "size_mismatch"
    # even when the envelope agrees, its own bounds (MAX_SIDE) refuse the size
    f.width = f.height = 12000
    assert _reason(f.SerializeToString()) == "bad_size"
    # a header that disagrees a little: refused the same way, before decoding too
    f = _frame()
    f.jpeg = _with_sof_size(f.jpeg, 64, 49)
    assert _reason(f.SerializeToString()) == "size_mismatch"
    assert not decoded


def _rotated_by_exif(jpeg: bytes) -> bytes:
    """``jpeg`` with an EXIF segment saying "turn 90 degrees clockwise to show" (orientation 6)."""
    import struct

    entry = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)  # tag, SHORT, count 1, value 6
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + bytes(4)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


@pytest.mark.parametrize("envelope", [(64, 48), (48, 64)])
def test_a_jpeg_turned_by_its_exif_orientation_is_decoded_upright(envelope):
    """The envelope may give the size as stored (64 x 48) or as shown (48 x 64)."""
    f = _frame()
    f.jpeg = _rotated_by_exif(f.jpeg)
    f.width, f.height = envelope
    d = decode_frame(f.SerializeToString(), key=b"cam-1", max_bytes=MAX)
    assert d.image.shape == (64, 48, 3)


def test_jpeg_size_reads_the_frame_header():
    import cv2

    image = _image(37, 53)
    assert jpeg_size(encode_jpeg(image)) == (53, 37)
    ok, progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert jpeg_size(progressive.tobytes()) == (53, 37)  # SOF2
    ok, grey = cv2.imencode(".jpg", image[:, :, 0])
    assert jpeg_size(grey.tobytes()) == (53, 37)
    ok, png = cv2.imencode(".png", image)
    assert jpeg_size(png.tobytes()) is None
    assert jpeg_size(b"\xff\xd8\xff\xda\x00\x02") is None  # a scan before any frame header
    assert jpeg_size(encode_jpeg(image)[:20]) is None  # cut off before the header
    assert jpeg_size(b"\xff\xd8" + b"\xff\xfe\x00\x02" * 100_000) is None  # endless comments
