"""The person-detector interface, its common configuration and box geometry.

A detector is one stage with one batch call: ``detector(frames) -> list[Detections]``. Plug-ins
implement :meth:`Detector.detect` (raw scored candidates per frame, in frame pixels); the base
class validates the frames and then, identically for every plug-in, clips boxes to the frame,
drops low scores and boxes outside the height bounds, and suppresses overlaps (NMS). A detector
may hold per-camera state (background subtraction does), so one instance serves one camera.

Boxes are ``(x, y, w, h)`` in pixels of the frame that was passed in, ``float32``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pedsearch.errors import ConfigError, InvalidInput

MODELS_HINT = (
    "detector files are not shipped with pedsearch: Yolo-Fastest 1.1 body comes from the "
    "Yolo-Fastest repository (ModelZoo/yolo-fastest-1.1_body/), YOLOX-nano from Megvii's YOLOX "
    "ONNX export; put them under paths.models_root (PEDSEARCH_PATHS__MODELS_ROOT) as "
    "yolo-fastest-1.1-body/ and yolox-nano/, or give an absolute path"
)


@dataclass(frozen=True)
class Detections:
    """People found in one frame.

    Attributes:
        boxes: ``(N, 4)`` float32 ``x, y, w, h`` in frame pixels.
        scores: ``(N,)`` float32 confidences, higher is more certain (the scale is the
            plug-in's: a probability for the learned detectors, an SVM margin for HOG, the
            foreground fill ratio for background subtraction).
    """

    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(boxes) != len(scores):
            raise InvalidInput(f"{len(boxes)} boxes but {len(scores)} scores")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def xyxy(self) -> np.ndarray:
        """Boxes as ``(N, 4)`` ``x1, y1, x2, y2``."""
        return xywh_to_xyxy(self.boxes)

    def take(self, index: np.ndarray | Sequence[int]) -> Detections:
        """The detections at ``index`` (a boolean mask or integer indices), in that order."""
        index = np.asarray(index)
        return Detections(self.boxes[index], self.scores[index])


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x, y, w, h -> ``(N, 4)`` x1, y1, x2, y2."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x1, y1, x2, y2 -> ``(N, 4)`` x, y, w, h."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Args:
        a: ``(N, 4)`` x, y, w, h.
        b: ``(M, 4)`` x, y, w, h.

    Returns:
        ``(N, M)`` float64 IoU in ``[0, 1]``; 0 where both boxes are empty.
    """
    a = xywh_to_xyxy(a).astype(np.float64)
    b = xywh_to_xyxy(b).astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    Boxes are visited by descending score (ties keep input order, so the result is
    deterministic); a box is dropped when its IoU with an already kept box is above
    ``iou_threshold``.

    Args:
        boxes: ``(N, 4)`` x, y, w, h.
        scores: ``(N,)``.
        iou_threshold: overlap above which the lower-scored box is suppressed.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by descending score.
    """
    scores = np.asarray(scores).reshape(-1)
    if len(scores) == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(-scores, kind="stable")
    ious = iou_matrix(boxes, boxes)
    suppressed = np.zeros(len(scores), bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= ious[i] > iou_threshold
    return np.asarray(keep, np.int64)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorConfig(Strict):
    """Options every detector plug-in has."""

    score_threshold: float = Field(
        0.3, ge=0, le=1000, description="detections scoring below this are dropped"
    )
    nms_iou: float = Field(
        0.45, gt=0, le=1, description="a box overlapping a better one by more IoU is dropped"
    )
    min_box_height: float = Field(
        0, ge=0, le=10_000, description="boxes shorter than this (frame pixels) are dropped"
    )
    max_box_height: float | None = Field(
        None, gt=0, le=100_000, description="boxes taller than this are dropped; None = no limit"
    )

    @model_validator(mode="after")
    def _heights_ordered(self) -> DetectorConfig:
        if self.max_box_height is not None and self.max_box_height < self.min_box_height:
            raise ValueError(
                f"max_box_height {self.max_box_height} is below min_box_height "
                f"{self.min_box_height}"
            )
        return self


Device = Literal["auto", "cpu", "cuda"]


class LearnedDetectorConfig(DetectorConfig):
    """Options of the detectors that run a learned network from a file."""

    device: Device = Field(
        "auto", description="auto = CUDA when this build and machine have it, else CPU"
    )
    models_root: pathlib.Path | None = Field(
        None,
        description="folder that relative model paths are read from; None = the loaded "
        "configuration's paths.models_root (build_detector's models_root), else the "
        "environment's",
    )


class Detector:
    """Base class of person detectors: one batch call over frames of one camera.

    Args:
        score_threshold: detections scoring below this are dropped.
        nms_iou: IoU above which the lower-scored of two boxes is suppressed.
        min_box_height: boxes shorter than this (pixels) are dropped.
        max_box_height: boxes taller than this are dropped; ``None`` for no limit.

    Plug-ins are built by name: ``build_detector(spec)`` for a
    :class:`pedsearch.config.DetectorSpec`, or ``DETECTORS.build(name, **options)``.

    Example:
        >>> from workers.detectors import DETECTORS
        >>> det = DETECTORS.build("bgsub", warmup_frames=10)
        >>> per_frame = det(frames)          # list[Detections], one per frame
    """

    def __init__(
        self,
        *,
        score_threshold: float = 0.3,
        nms_iou: float = 0.45,
        min_box_height: float = 0,
        max_box_height: float | None = None,
    ) -> None:
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.min_box_height = float(min_box_height)
        self.max_box_height = None if max_box_height is None else float(max_box_height)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detect people in a batch of frames.

        Args:
            frames: BGR ``uint8`` images, each ``(H, W, 3)``, in stream order.

        Returns:
            One :class:`Detections` per frame, boxes sorted by descending score.

        Raises:
            InvalidInput: a frame is not an ``(H, W, 3)`` uint8 image.
        """
        frames = list(frames)
        for i, frame in enumerate(frames):
            check_frame(frame, f"frame {i}")
        if not frames:
            return []
        raw = self.detect(frames)
        if len(raw) != len(frames):
            raise RuntimeError(f"{type(self).__name__} returned {len(raw)} results for "
                               f"{len(frames)} frames")
        return [self._finish(d, f.shape) for d, f in zip(raw, frames)]

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        """Raw candidates per frame (frame pixels, before thresholds and NMS)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-stream state (a new camera, a seek, a replay). Stateless by default."""

    def suppress(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Indices kept by NMS; plug-ins may swap in their reference implementation."""
        return nms(boxes, scores, self.nms_iou)

    def _finish(self, det: Detections, shape: tuple[int, ...]) -> Detections:
        if len(det) == 0:
            return Detections.empty()
        height, width = shape[:2]
        xyxy = det.xyxy()
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, width)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, height)
        boxes = xyxy_to_xywh(xyxy)
        h = boxes[:, 3]
        keep = (det.scores >= self.score_threshold) & (boxes[:, 2] > 0) & (h > 0)
        keep &= h >= self.min_box_height
        if self.max_box_height is not None:
            keep &= h <= self.max_box_height
        boxes, scores = boxes[keep], det.scores[keep]
        kept = self.suppress(boxes, scores)
        kept = kept[np.argsort(-scores[kept], kind="stable")]
        return Detections(boxes[kept], scores[kept])


def check_frame(frame: object, what: str = "frame") -> np.ndarray:
    """Raise :class:`InvalidInput` unless ``frame`` is a non-empty ``(H, W, 3)`` uint8 array."""
    if not isinstance(frame, np.ndarray):
        raise InvalidInput(f"{what} must be a numpy array, not {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.size == 0:
        raise InvalidInput(
            f"{what} must be a BGR uint8 image of shape (H, W, 3), got {frame.dtype} "
            f"{frame.shape}"
        )
    return frame


def resolve_model_file(path: pathlib.Path | str, models_root: pathlib.Path | None) -> pathlib.Path:
    """The readable file a plug-in's ``path`` option names.

    Absolute paths are taken as they are; a relative path is looked up under ``models_root``
    (the workers pass their loaded configuration's), else under
    ``Settings().paths.resolved_models_root()`` (``PEDSEARCH_PATHS__MODELS_ROOT`` or
    ``../shared/models`` beside a source checkout: the environment only, no configuration
    file), else the working directory.

    Raises:
        ConfigError: the file does not exist or cannot be read; the message names the paths
            tried and where such files come from.
    """
    path = pathlib.Path(path).expanduser()
    tried: list[pathlib.Path] = []
    if path.is_absolute():
        tried.append(path)
    else:
        root = models_root
        if root is None:
            root = _settings_models_root()
        if root is not None:
            tried.append(pathlib.Path(root).expanduser() / path)
        tried.append(pathlib.Path.cwd() / path)
    for candidate in tried:
        if candidate.is_file():
            if not os.access(candidate, os.R_OK):
                raise ConfigError(f"detector file {candidate} is not readable; {MODELS_HINT}")
            return candidate
    where = " or ".join(str(p) for p in tried)
    raise ConfigError(f"detector file {path} not found (looked at {where}); {MODELS_HINT}")


def _settings_models_root() -> pathlib.Path | None:
    from pedsearch.config import Settings

    try:
        return Settings().paths.resolved_models_root()
    except Exception as exc:  # a broken environment must say so, not hide the real cause
        raise ConfigError(f"cannot read paths.models_root from the environment: {exc}") from exc


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when OpenCV's DNN module has a CUDA device, else ``"cpu"``.

    Raises:
        ConfigError: ``"cuda"`` was asked for but this OpenCV build or machine has none.
    """
    import cv2

    try:
        has_cuda = cv2.cuda.getCudaEnabledDeviceCount() > 0
    except (AttributeError, cv2.error):
        has_cuda = False
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            "device='cuda' but this OpenCV build has no CUDA device (opencv-python-headless "
            "from PyPI is CPU-only); use device='auto' or 'cpu', or an OpenCV built with CUDA"
        )
    return device


def set_dnn_device(net: object, device: str) -> str:
    """Put a ``cv2.dnn.Net`` on ``device`` (``auto``/``cpu``/``cuda``); returns the one used."""
    import cv2

    used = resolve_device(device)
    if used == "cuda":
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)  # type: ignore[attr-defined]
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)  # type: ignore[attr-defined]
    else:
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)  # type: ignore[attr-defined]
        net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)  # type: ignore[attr-defined]
    return used
