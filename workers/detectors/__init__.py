"""Person detectors, chosen by name from configuration.

Each plug-in module registers its class here together with its own strict pydantic config
model; ``build_detector(spec)`` (or ``DETECTORS.build(spec.type, **spec.params())``) validates
the options and constructs it:

======================  ==================================================================
``hog``                 OpenCV's HOG + linear SVM people detector; no files, weak on real
                        footage (finds ~6 % of MOT17 pedestrians).
``bgsub``               background subtraction (MOG2 / KNN) for static cameras; no files;
                        the default for the synthetic scenes.
``darknet``             a Darknet cfg + weights (Yolo-Fastest 1.1 body) through ``cv2.dnn``.
``yolox``               a YOLOX ONNX file (YOLOX-nano) through ``cv2.dnn``, optional tiling.
``torchscript``         any TorchScript person detector following a small contract.
======================  ==================================================================

Example:
    >>> from pedsearch.config import DetectorSpec
    >>> det = build_detector(DetectorSpec(type="darknet", input_width=1024, input_height=576))
    >>> [d.boxes for d in det([frame])]
"""

from __future__ import annotations

import pathlib

from pedsearch.registry import Registry
from workers.detectors.base import Detections, Detector, iou_matrix, nms

DETECTORS: Registry[Detector] = Registry("detector")

# imported for their registration side effect; must follow the registry's definition
from workers.detectors import bgsub, darknet, hog, torchscript, yolox  # noqa: F401


def build_detector(spec: object, *, models_root: pathlib.Path | None = None) -> Detector:
    """Build the detector a :class:`pedsearch.config.DetectorSpec` names.

    Args:
        spec: the plug-in's name and options.
        models_root: where relative model paths are read from when ``spec`` does not say
            (pass the loaded settings' ``paths.resolved_models_root()``): without it a plug-in
            reads the environment alone, which misses a ``paths.models_root`` set in the
            configuration file, and a Ray worker on another machine has not even the
            driver's environment.

    Raises:
        ConfigError: unknown ``type`` (the message lists the known ones), an option the
            plug-in does not have or out of bounds, or a missing model file.
    """
    params = spec.params()  # type: ignore[attr-defined]
    config = DETECTORS.config_model(spec.type)  # type: ignore[attr-defined]
    takes_root = config is not None and "models_root" in config.model_fields
    if models_root is not None and takes_root and params.get("models_root") is None:
        params["models_root"] = models_root
    return DETECTORS.build(spec.type, **params)  # type: ignore[attr-defined]


__all__ = ["DETECTORS", "Detections", "Detector", "build_detector", "iou_matrix", "nms"]
