"""Any TorchScript person detector that follows a small contract, on CPU or CUDA.

Contract of the file (``torch.jit.save`` of a scripted or traced module):

- input: one float32 tensor ``(B, 3, H, W)``, RGB, values in ``[0, 1]``;
- output: per image an ``(N, 5)`` tensor ``x1, y1, x2, y2, score`` in pixels of the input it
  was given, either as a list / tuple of ``B`` tensors or as one ``(B, N, 5)`` tensor (rows
  with a score below ``score_threshold`` are dropped, so padding rows of score 0 are fine).

With ``input_width`` / ``input_height`` set, frames are resized to that size and the boxes are
scaled back; otherwise frames are fed at native size (frames of equal size share a batch).
``torch`` is imported when such a detector is built, not when the registry is.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Any

import cv2
import numpy as np
from pydantic import Field, model_validator

from pedsearch.errors import ConfigError
from workers.detectors import DETECTORS
from workers.detectors.base import Detections, Detector, LearnedDetectorConfig, resolve_model_file


class TorchScriptConfig(LearnedDetectorConfig):
    model: pathlib.Path = Field(
        pathlib.Path("person_detector.torchscript.pt"),
        description="TorchScript file (relative = under models_root)",
    )
    input_width: int | None = Field(
        None, ge=16, le=8192, description="frames are resized to this width; None = native"
    )
    input_height: int | None = Field(
        None, ge=16, le=8192, description="frames are resized to this height; None = native"
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> TorchScriptConfig:
        if (self.input_width is None) != (self.input_height is None):
            raise ValueError("give both input_width and input_height, or neither")
        return self


@DETECTORS.register("torchscript", TorchScriptConfig)
class TorchScriptDetector(Detector):
    """A TorchScript detector file (see the module docstring for its contract).

    Args:
        model: the TorchScript file.
        input_width: resize width, or ``None`` for native size.
        input_height: resize height, or ``None`` for native size.
        device: ``"auto"`` (CUDA when torch sees one), ``"cpu"`` or ``"cuda"``.
        models_root: folder relative paths are read from.
        **common: :class:`~workers.detectors.base.Detector` options.

    Raises:
        ConfigError: missing or unreadable file, not TorchScript, or CUDA asked for but absent.
    """

    def __init__(
        self,
        *,
        model: pathlib.Path | str = TorchScriptConfig.model_fields["model"].default,
        input_width: int | None = None,
        input_height: int | None = None,
        device: str = "auto",
        models_root: pathlib.Path | None = None,
        **common: object,
    ) -> None:
        super().__init__(**common)  # type: ignore[arg-type]
        import torch

        self._torch = torch
        self.model_path = resolve_model_file(model, models_root)
        self.input_size = None if input_width is None else (int(input_width), int(input_height))
        cuda = torch.cuda.is_available()
        if device == "cuda" and not cuda:
            raise ConfigError("device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
        self.device = torch.device("cuda" if device != "cpu" and cuda else "cpu")
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript, still loads it
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(self.model_path), map_location=self.device)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ConfigError(
                f"cannot load TorchScript detector {self.model_path}: {exc}"
            ) from exc
        self.module.eval()

    def detect(self, frames: list[np.ndarray]) -> list[Detections]:
        results: list[Detections | None] = [None] * len(frames)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, frame in enumerate(frames):
            key = (0,) if self.input_size is not None else frame.shape
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            for i, det in zip(indices, self._batch([frames[i] for i in indices])):
                results[i] = det
        return results  # type: ignore[return-value]

    def _batch(self, frames: list[np.ndarray]) -> list[Detections]:
        torch = self._torch
        images = []
        for frame in frames:
            if self.input_size is not None:
                frame = cv2.resize(frame, self.input_size, interpolation=cv2.INTER_LINEAR)
            images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        batch = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
        tensor = torch.from_numpy(batch).to(self.device, dtype=torch.float32).div_(255.0)
        with torch.inference_mode():
            out = self.module(tensor)
        per_image = self._split(out, len(frames))
        height, width = tensor.shape[2:]
        dets = []
        for frame, rows in zip(frames, per_image):
            sx = frame.shape[1] / width
            sy = frame.shape[0] / height
            xyxy = rows[:, :4] * np.array([sx, sy, sx, sy], np.float32)
            boxes = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            dets.append(Detections(boxes, rows[:, 4]))
        return dets

    def _split(self, out: Any, batch: int) -> list[np.ndarray]:
        torch = self._torch
        if isinstance(out, torch.Tensor):
            if out.dim() == 2 and batch == 1:
                out = out.unsqueeze(0)
            parts = list(out.unbind(0)) if out.dim() == 3 else None
        elif isinstance(out, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in out):
            parts = list(out)
        else:
            parts = None
        if parts is None or len(parts) != batch or any(
            p.dim() != 2 or p.shape[1] != 5 for p in parts
        ):
            raise ConfigError(
                f"TorchScript detector {self.model_path} broke the contract: expected per "
                f"image an (N, 5) tensor for a batch of {batch}, got {_describe(out)}"
            )
        return [p.detach().float().cpu().numpy() for p in parts]


def _describe(out: Any) -> str:
    shape = getattr(out, "shape", None)
    if shape is not None:
        return f"a tensor of shape {tuple(shape)}"
    if isinstance(out, (list, tuple)):
        return f"a {type(out).__name__} of {[_describe(o) for o in out]}"
    return type(out).__name__
