"""A Darknet YOLO person detector (``.cfg`` + ``.weights``) run by ``cv2.dnn``.

Made for Yolo-Fastest 1.1 body (one class, person body; public domain; 1.2 MB), which finds
0.80 of the mostly visible pedestrians of the MOT17 street frames at 1024x576. Any Darknet
``[yolo]`` model whose class 0 is a person works the same way.

Decoding (OpenCV's ``[yolo]`` layer already applies the sigmoids and anchors): every output row
is ``cx, cy, w, h, objectness, class scores...`` normalised to the image, where the class
columns already hold ``objectness * p(class)``, so the person score is column 5; OpenCV zeroes
class scores below the layer's ``thresh`` (0.2 unless the cfg says otherwise). Non-maximum
suppression is ``cv2.dnn.NMSBoxes``.
"""

from __future__ import annotations

import pathlib
import re

import cv2
import numpy as np
from pydantic import Field

from pedsearch.errors import ConfigError
from workers.detectors import DETECTORS
from workers.detectors.base import (
    Detections,
    Detector,
    LearnedDetectorConfig,
    resolve_model_file,
    set_dnn_device,
)

OPENCV_YOLO_THRESH = 0.2  # cv2.dnn's default for a [yolo] section without thresh=


class DarknetConfig(LearnedDetectorConfig):
    cfg: pathlib.Path = Field(
        pathlib.Path("yolo-fastest-1.1-body/yolo-fastest-1.1_body.cfg"),
        description="Darknet .cfg file (relative = under models_root)",
    )
    weights: pathlib.Path = Field(
        pathlib.Path("yolo-fastest-1.1-body/yolo-fastest-1.1_body.weights"),
        description="Darknet .weights file (relative = under models_root)",
    )
    input_width: int = Field(1024, ge=32, le=4096, multiple_of=32, description="network width")
    input_height: int = Field(576, ge=32, le=4096, multiple_of=32, description="network height")
    thresh: float | None = Field(
        None, ge=0, le=1,
        description="threshold written into every [yolo] section (OpenCV zeroes scores below "
        "it; its default is 0.2). None = 0.2, or score_threshold when that is lower",
    )
    class_id: int = Field(0, ge=0, le=1000, description="the person class of the model")


@DETECTORS.register("darknet", DarknetConfig)
class DarknetDetector(Detector):
    """Darknet YOLO through ``cv2.dnn``; a batch of frames is one forward pass.

    Args:
        cfg: the ``.cfg`` file.
        weights: the ``.weights`` file.
        input_width: network input width (a multiple of 32).
        input_height: network input height (a multiple of 32).
        thresh: ``[yolo]`` threshold override; see :class:`DarknetConfig`.
        class_id: the person class.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        models_root: folder relative paths are read from.
        **common: :class:`~workers.detectors.base.Detector` options.

    Raises:
        ConfigError: a file is missing, unreadable or not a Darknet model.
    """

    def __init__(
        self,
        *,
        cfg: pathlib.Path | str = DarknetConfig.model_fields["cfg"].default,
        weights: pathlib.Path | str = DarknetConfig.model_fields["weights"].default,
        input_width: int = 1024,
        input_height: int = 576,
        thresh: float | None = None,
        class_id: int = 0,
        device: str = "auto",
        models_root: pathlib.Path | None = None,
        **common: object,
    ) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        self.cfg_path = resolve_model_file(cfg, models_root)
        self.weights_path = resolve_model_file(weights, models_root)
        self.input_size = (int(input_width), int(input_height))
        self.class_id = class_id
        if thresh is None and self.score_threshold < OPENCV_YOLO_THRESH:
            thresh = self.score_threshold
        self.thresh = thresh
        self.net = self._load()
        self.device = set_dnn_device(self.net, device)
        self._outputs = list(self.net.getUnconnectedOutLayersNames())

    def _load(self) -> cv2.dnn.Net:
        try:
            if self.thresh is None:
                return cv2.dnn.readNetFromDarknet(str(self.cfg_path), str(self.weights_path))
            text = with_yolo_thresh(self.cfg_path.read_text(), self.thresh)
            weights = np.fromfile(self.weights_path, dtype=np.uint8)
            return cv2.dnn.readNetFromDarknet(np.frombuffer(text.encode(), np.uint8), weights)
        except (cv2.error, OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot load Darknet model {self.cfg_path} + {self.weights_path}: {exc}"
            ) from exc

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        blob = cv2.dnn.blobFromImages(frames, 1 / 255.0, self.input_size, swapRB=True, crop=False)
        self.net.setInput(blob)
        outs = self.net.forward(self._outputs)
        batch = len(frames)
        rows = np.concatenate([o.reshape(batch, -1, o.shape[-1]) for o in outs], axis=1)
        return [self._decode(rows[i], frame.shape) for i, frame in enumerate(frames)]

    def _decode(self, rows: np.ndarray, shape: tuple[int, ...]) -> Detections:
        column = 5 + self.class_id
        if rows.shape[1] <= column:
            raise ConfigError(f"model {self.cfg_path} has no class {self.class_id}")
        scores = rows[:, column]
        keep = (scores > 0) & (scores >= self.score_threshold)
        rows, scores = rows[keep], scores[keep]
        height, width = shape[:2]
        w = rows[:, 2] * width
        h = rows[:, 3] * height
        x = rows[:, 0] * width - w / 2
        y = rows[:, 1] * height - h / 2
        return Detections(np.stack([x, y, w, h], axis=1), scores)

    def suppress(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if len(scores) == 0:
            return np.zeros((0,), np.int64)
        kept = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), 0.0, self.nms_iou)
        return np.asarray(kept, np.int64).reshape(-1)


def with_yolo_thresh(cfg_text: str, thresh: float) -> str:
    """``cfg_text`` with ``thresh=<thresh>`` as the only threshold of every ``[yolo]`` section."""
    out: list[str] = []
    in_yolo = False
    for line in cfg_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_yolo = stripped.lower() == "[yolo]"
            out.append(line)
            if in_yolo:
                out.append(f"thresh={thresh:g}")
            continue
        if in_yolo and re.match(r"thresh\s*=", stripped):
            continue
        out.append(line)
    return "\n".join(out) + "\n"
