"""Model architectures of pedsearch, shared by training and serving.

Serving (workers, gateway) rebuilds these classes from a bundle's ``bundle.json`` without
importing ``training``. Two registries choose the plug-ins by name:

- :data:`BACKBONES`: image backbones returning a feature map ``(B, C, H/s, W/s)``
  (``efficientnet_lite0``, the default with ImageNet weights shipped in a pip package, and
  ``resnet50``, the papers' backbone, with weights from a path the user gives);
- :data:`TEXT_ENCODERS`: text towers (``bilstm``, the papers' Bi-LSTM over a word vocabulary,
  and ``minilm``, the offline MiniLM-L6 sentence encoder, optional extra ``minilm``).

Example:
    >>> from pedsearch.models import BACKBONES
    >>> net = BACKBONES.build("efficientnet_lite0", pretrained=False)
    >>> net.out_channels
    1280
"""

from __future__ import annotations

from typing import Any

from pedsearch.registry import Registry

BACKBONES: Registry[Any] = Registry("backbone")
TEXT_ENCODERS: Registry[Any] = Registry("text encoder")

# the plug-in modules register themselves on import
from pedsearch.models import backbone as _backbone  # noqa: E402,F401
from pedsearch.models import text as _text  # noqa: E402,F401

__all__ = ["BACKBONES", "TEXT_ENCODERS"]
