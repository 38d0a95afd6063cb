"""The Kafka frame envelope: build it on the camera side, validate it on the worker side.

Validation is strict because the consumer must never stop on bad input: every way a message
can be wrong raises :class:`PoisonMessage` with a short machine-readable ``reason`` and a
message for people, and the consumer sends it to the dead-letter topic.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import cv2
import numpy as np
from google.protobuf.message import DecodeError

from pedsearch.config import CAMERA_ID
from pedsearch.errors import InvalidInput
from pedsearch.v1 import frame_pb2

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_SIDE = 8192
MIN_SIDE = 16
# a capture timestamp further than this from now is rejected as a clock or encoding error
MAX_CLOCK_SKEW_US = 10 * 365 * 24 * 3600 * 1_000_000
# JPEG markers (ITU T.81 B.1.1.3): SOF0..SOF15 less DHT, JPG and DAC carry the frame size;
# RSTn, SOI, EOI and TEM stand alone; every other marker is followed by its segment length
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xDA)) | {0x01}
_SOS = 0xDA
_FILL = re.compile(rb"\xff+")
# real files have a few dozen segments before the frame header; a crafted run of tiny ones
# must not cost more than decoding would
_MAX_SEGMENTS = 1024


class PoisonMessage(InvalidInput):
    """A Kafka message that cannot be processed; goes to the dead-letter topic."""

    code = "poison"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_camera_id(camera_id: str) -> str:
    """Raise :class:`InvalidInput` unless ``camera_id`` is 1-64 of ``[A-Za-z0-9_.:-]``."""
    if not CAMERA_ID.fullmatch(camera_id or ""):
        raise InvalidInput(
            f"camera id {camera_id!r} is invalid: use 1-64 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return camera_id


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """BGR ``(H, W, 3)`` uint8 -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InvalidInput(f"could not JPEG-encode an image of shape {image.shape}")
    return buf.tobytes()


def make_frame(
    *, camera_id: str, seq: int, image: np.ndarray, capture_ts_us: int | None = None,
    quality: int = 85, source: str = "", truth: frame_pb2.SceneTruth | None = None,
) -> frame_pb2.Frame:
    """Build an envelope from a BGR image ``(H, W, 3)`` uint8."""
    check_camera_id(camera_id)
    h, w = image.shape[:2]
    frame = frame_pb2.Frame(
        format_version=FORMAT_VERSION, camera_id=camera_id, seq=int(seq),
        capture_ts_us=int(capture_ts_us if capture_ts_us is not None else time.time() * 1e6),
        width=w, height=h, jpeg=encode_jpeg(image, quality), source=source,
    )
    if truth is not None:
        frame.truth.CopyFrom(truth)
    return frame


@dataclass
class DecodedFrame:
    """A validated envelope with its decoded pixels."""

    frame: frame_pb2.Frame
    image: np.ndarray  # (H, W, 3) uint8 BGR

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id


def parse_frame(value: bytes | None, *, key: bytes | None, max_bytes: int,
                require_key: bool = False) -> frame_pb2.Frame:
    """Parse and check an envelope's fields without decoding the JPEG.

    Args:
        value: the serialized envelope.
        key: the Kafka message key, which must be the camera id; ``None`` skips the check
            unless ``require_key``.
        max_bytes: larger values are refused.
        require_key: the value comes from Kafka, where the key is what keeps a camera's
            frames on one partition, in order: a record without one is refused.

    Raises:
        PoisonMessage: with reason ``empty``, ``too_large``, ``undecodable``, ``bad_version``,
            ``bad_camera_id``, ``missing_key``, ``key_mismatch``, ``bad_size``,
            ``bad_timestamp`` or ``no_image``.
    """
    if not value:
        raise PoisonMessage("empty", "message has no value")
    if len(value) > max_bytes:
        raise PoisonMessage("too_large", f"message of {len(value)} bytes exceeds {max_bytes}")
    frame = frame_pb2.Frame()
    try:
        frame.ParseFromString(value)
    except (DecodeError, ValueError) as exc:
        raise PoisonMessage("undecodable", f"not a Frame protobuf: {exc}") from None
    if frame.format_version not in SUPPORTED_VERSIONS:
        raise PoisonMessage(
            "bad_version",
            f"format_version {frame.format_version} is not supported "
            f"(supported: {sorted(SUPPORTED_VERSIONS)}); upgrade the workers or the camera",
        )
    if not CAMERA_ID.fullmatch(frame.camera_id):
        raise PoisonMessage("bad_camera_id", f"camera id {frame.camera_id!r} is invalid")
    if require_key and not key:
        # producers that forget the key spread a camera's frames over partitions: consumers
        # would then track it from several places at once, out of order
        raise PoisonMessage(
            "missing_key", f"message of camera {frame.camera_id!r} has no key (the camera id)"
        )
    if key is not None and key.decode("utf-8", "replace") != frame.camera_id:
        raise PoisonMessage(
            "key_mismatch", f"message key {key!r} differs from camera id {frame.camera_id!r}"
        )
    if not (MIN_SIDE <= frame.width <= MAX_SIDE and MIN_SIDE <= frame.height <= MAX_SIDE):
        raise PoisonMessage(
            "bad_size", f"frame size {frame.width}x{frame.height} outside {MIN_SIDE}..{MAX_SIDE}"
        )
    now_us = time.time() * 1e6
    if frame.capture_ts_us <= 0 or abs(frame.capture_ts_us - now_us) > MAX_CLOCK_SKEW_US:
        raise PoisonMessage("bad_timestamp",
                            f"capture timestamp {frame.capture_ts_us} us is absurd")
    if not frame.jpeg:
        raise PoisonMessage("no_image", "frame carries no JPEG bytes")
    return frame


def decode_frame(value: bytes | None, *, key: bytes | None, max_bytes: int,
                 require_key: bool = False) -> DecodedFrame:
    """Validate an envelope and decode its JPEG.

    The JPEG's own frame header is checked against the envelope's size before decoding: a few
    hundred bytes that claim 12000x12000 pixels would otherwise make the decoder allocate
    gigabytes before the mismatch shows. The envelope's size is bounded (``MAX_SIDE``), so
    agreeing with it bounds what decoding allocates. The size may be given either way round:
    the image is decoded upright (its EXIF orientation applied), and boxes and crops refer to
    that image.

    Raises:
        PoisonMessage: as :func:`parse_frame`, or ``corrupt_jpeg`` / ``size_mismatch``.
    """
    frame = parse_frame(value, key=key, max_bytes=max_bytes, require_key=require_key)
    header = jpeg_size(frame.jpeg)
    if header is None:
        raise PoisonMessage("corrupt_jpeg",
                            f"{len(frame.jpeg)} bytes are not a JPEG with a frame header")
    # a camera may give the size as stored or as shown: an EXIF orientation has the decoder
    # turn the image a quarter, and either way the pixel count is the one bounded above
    sizes = {(frame.width, frame.height), (frame.height, frame.width)}
    if header not in sizes:
        raise PoisonMessage(
            "size_mismatch", f"JPEG header says {header[0]}x{header[1]} but the envelope says "
            f"{frame.width}x{frame.height}"
        )
    buf = np.frombuffer(frame.jpeg, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise PoisonMessage("corrupt_jpeg", f"JPEG of {len(frame.jpeg)} bytes does not decode")
    h, w = image.shape[:2]
    if (w, h) not in sizes:
        raise PoisonMessage(
            "size_mismatch", f"JPEG is {w}x{h} but the envelope says {frame.width}x{frame.height}"
        )
    return DecodedFrame(frame=frame, image=image)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header (SOFn), read without decoding.

    Walks the marker segments from SOI up to the first frame header. ``None`` when ``data`` does
    not start like a JPEG, a segment is malformed, the scan starts before any frame header, or
    the data ends first.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    for _ in range(_MAX_SEGMENTS):
        fill = _FILL.match(data, i)  # a marker is 0xFF (any number of them) and its code
        if fill is None or fill.end() >= n:
            return None
        marker, i = data[fill.end()], fill.end() + 1
        if marker in _STANDALONE_MARKERS:
            continue
        if marker == 0x00 or marker == _SOS or i + 2 > n:
            return None
        length = int.from_bytes(data[i:i + 2], "big")
        if marker in _SOF_MARKERS:
            # length(2) precision(1) height(2) width(2) ...
            if length < 8 or i + 7 > n:
                return None
            height = int.from_bytes(data[i + 3:i + 5], "big")
            return int.from_bytes(data[i + 5:i + 7], "big"), height
        if length < 2:
            return None
        i += length
    return None
