"""The Kafka frame envelope: build it on the camera side, validate it on the worker side.

Validation is strict because the consumer must never stop on bad input: every way a message
can be wrong raises :class:`PoisonMessage` with a short machine-readable ``reason`` and a
message for people, and the consumer sends it to the dead-letter topic.
"""

from __future__ import annotations

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


def parse_frame(value: bytes | None, *, key: bytes | None, max_bytes: int) -> frame_pb2.Frame:
    """Parse and check an envelope's fields without decoding the JPEG.

    Raises:
        PoisonMessage: with reason ``empty``, ``too_large``, ``undecodable``, ``bad_version``,
            ``bad_camera_id``, ``key_mismatch``, ``bad_size``, ``bad_timestamp`` or ``no_image``.
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


def decode_frame(value: bytes | None, *, key: bytes | None, max_bytes: int) -> DecodedFrame:
    """Validate an envelope and decode its JPEG.

    Raises:
        PoisonMessage: as :func:`parse_frame`, or ``corrupt_jpeg`` / ``size_mismatch``.
    """
    frame = parse_frame(value, key=key, max_bytes=max_bytes)
    buf = np.frombuffer(frame.jpeg, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        raise PoisonMessage("corrupt_jpeg", f"JPEG of {len(frame.jpeg)} bytes does not decode")
    h, w = image.shape[:2]
    if (w, h) != (frame.width, frame.height):
        raise PoisonMessage(
            "size_mismatch", f"JPEG is {w}x{h} but the envelope says {frame.width}x{frame.height}"
        )
    return DecodedFrame(frame=frame, image=image)
