"""OpenCV's HOG + linear SVM people detector (Dalal & Triggs), needing no model file.

It finds upright people at least 128 pixels tall in the (resized) image and little else: on the
MOT17 street frames (1920x1080, native size, ~460 ms per frame) it finds about 5 % of the
pedestrians at precision 0.10, and none once the frame is shrunk to 640 pixels wide. Useful as
a no-download baseline and on close, large people; prefer ``darknet`` / ``yolox`` on real
footage.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from workers.detectors import DETECTORS
from workers.detectors.base import Detections, Detector, DetectorConfig


class HogConfig(DetectorConfig):
    score_threshold: float = Field(
        0.3, ge=0, le=1000, description="minimum SVM margin (foundWeights) of a detection"
    )
    resize_width: int | None = Field(
        None, ge=64, le=8192,
        description="frames are resized to this width before detection (aspect kept), for "
        "speed; None = native size. The window is 64x128, so people shorter than "
        "128 * frame_width / resize_width pixels are not found",
    )
    win_stride: int = Field(8, ge=8, le=64, multiple_of=8, description="window step (pixels)")
    padding: int = Field(8, ge=0, le=64, description="padding around the image (pixels)")
    scale: float = Field(1.05, gt=1, le=2, description="pyramid step between scales")
    hit_threshold: float = Field(0.0, ge=-10, le=10, description="SVM decision offset")
    group_threshold: int = Field(
        2, ge=0, le=20, description="OpenCV's rectangle grouping (0 = none; NMS runs after)"
    )


@DETECTORS.register("hog", HogConfig)
class HogDetector(Detector):
    """``cv2.HOGDescriptor`` with the default people SVM; frames are processed one by one.

    Args:
        resize_width: width frames are resized to first; ``None`` keeps the native size.
        win_stride: sliding-window step in pixels (a multiple of 8).
        padding: image padding in pixels.
        scale: pyramid scale step.
        hit_threshold: SVM decision threshold.
        group_threshold: OpenCV's grouping of overlapping windows.
        **common: :class:`~workers.detectors.base.Detector` options.
    """

    def __init__(
        self,
        *,
        resize_width: int | None = None,
        win_stride: int = 8,
        padding: int = 8,
        scale: float = 1.05,
        hit_threshold: float = 0.0,
        group_threshold: int = 2,
        **common: object,
    ) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        self.resize_width = resize_width
        self.win_stride = (win_stride, win_stride)
        self.padding = (padding, padding)
        self.scale = scale
        self.hit_threshold = hit_threshold
        self.group_threshold = group_threshold
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        return [self._one(frame) for frame in frames]

    def _one(self, frame: np.ndarray) -> Detections:
        factor = 1.0
        image = frame
        if self.resize_width is not None and self.resize_width != frame.shape[1]:
            factor = frame.shape[1] / self.resize_width
            height = max(1, round(frame.shape[0] / factor))
            image = cv2.resize(frame, (self.resize_width, height), interpolation=cv2.INTER_AREA)
        if image.shape[0] < 128 or image.shape[1] < 64:
            return Detections.empty()
        rects, weights = self._hog.detectMultiScale(
            image,
            hitThreshold=self.hit_threshold,
            winStride=self.win_stride,
            padding=self.padding,
            scale=self.scale,
            groupThreshold=self.group_threshold,
        )
        if len(rects) == 0:
            return Detections.empty()
        return Detections(np.asarray(rects, np.float32) * factor, np.asarray(weights).ravel())
