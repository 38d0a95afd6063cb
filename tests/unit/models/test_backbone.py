"""Backbones: the EfficientNet-Lite0 key mapping and pretrained sanity, ResNet-50 loading."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import torch

from pedsearch.config import PathsConfig
from pedsearch.errors import ConfigError
from pedsearch.models import BACKBONES
from pedsearch.models.backbone import (
    LITE_PIXEL_MEAN,
    LITE_PIXEL_STD,
    EfficientNetLite0,
    ResNet50,
    efficientnet_lite0_weights_path,
    map_lukemelas_key,
    map_lukemelas_state_dict,
)

DATA = PathsConfig().resolved_data_root()
skip_without_peta = pytest.mark.skipif(
    DATA is None or not (DATA / "peta").is_dir(),
    reason="PETA crops not found (set paths.data_root / PEDSEARCH_PATHS__DATA_ROOT)",
)

# ImageNet classes a person's clothing or bag is recognised as (abaya, academic gown, apron,
# bulletproof vest, cardigan, cloak, fur coat, gown, jean, jersey, kimono, lab coat, loafer,
# military uniform, miniskirt, overskirt, pajama, poncho, running shoe, sandal, suit, sweatshirt,
# trench coat, Windsor tie, backpack, purse, mailbag, ...).
APPAREL = {
    399, 400, 411, 445, 451, 452, 457, 459, 465, 474, 501, 514, 515, 518, 552, 568, 578, 601,
    608, 610, 614, 615, 617, 630, 636, 638, 639, 643, 652, 655, 667, 689, 697, 735, 748, 770,
    774, 775, 793, 808, 834, 841, 842, 869, 906, 911, 414,
}


@pytest.fixture(scope="module")
def lite_file() -> dict[str, torch.Tensor]:
    return torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained() -> tuple[EfficientNetLite0, torch.nn.Linear]:
    torch.manual_seed(0)
    net = EfficientNetLite0(pretrained=False, last_stride=2)
    extra = net.load_lukemelas(efficientnet_lite0_weights_path())
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": extra["classifier.weight"], "bias": extra["classifier.bias"]})
    return net.eval(), fc.eval()


def _normalise(rgb01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(LITE_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(LITE_PIXEL_STD).view(1, 3, 1, 1)
    return (rgb01 - mean) / std


def _synthetic_image() -> torch.Tensor:
    """A deterministic structured image: colour gradients, a disc and stripes, (1, 3, 224, 224)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 224), torch.linspace(0, 1, 224), indexing="ij")
    disc = (((x - 0.5) ** 2 + (y - 0.45) ** 2) < 0.06).float()
    stripes = (torch.sin(y * 40) > 0).float()
    img = torch.stack([0.8 * disc + 0.2 * x, 0.5 * stripes * (1 - disc), 0.3 + 0.5 * y])
    return img.clamp(0, 1)[None]


def test_every_shipped_tensor_maps_with_matching_shape(lite_file):
    tensors = {k: v for k, v in lite_file.items() if not k.endswith("num_batches_tracked")}
    assert len(tensors) == 247
    net = EfficientNetLite0(pretrained=False)
    own = net.state_dict()
    mapped = map_lukemelas_state_dict(lite_file, source="test")
    for key, value in tensors.items():
        name = map_lukemelas_key(key)
        if name.startswith("classifier."):
            assert key.startswith("_fc.")
            continue
        assert name in own, f"{key} -> {name} is not a backbone tensor"
        assert tuple(own[name].shape) == tuple(value.shape), key
    # and the other way round: every backbone tensor is provided by the file
    missing = [k for k in own if k not in mapped]
    assert missing == []
    assert {k for k in mapped if k.startswith("classifier.")} == {
        "classifier.weight", "classifier.bias"
    }


def test_key_mapping_examples():
    assert map_lukemelas_key("_conv_stem.weight") == "stem.conv.weight"
    assert map_lukemelas_key("_bn0.running_var") == "stem.bn.running_var"
    assert map_lukemelas_key("_blocks.0._depthwise_conv.weight") == "blocks.0.dw.conv.weight"
    assert map_lukemelas_key("_blocks.7._bn0.bias") == "blocks.7.expand.bn.bias"
    assert map_lukemelas_key("_blocks.15._bn2.weight") == "blocks.15.project.bn.weight"
    assert map_lukemelas_key("_bn1.weight") == "head.bn.weight"
    assert map_lukemelas_key("_fc.bias") == "classifier.bias"
    with pytest.raises(KeyError):
        map_lukemelas_key("_blocks.3._se_reduce.weight")
    with pytest.raises(ConfigError, match="not part of an EfficientNet-Lite0"):
        map_lukemelas_state_dict({"fc.weight": torch.zeros(1)}, source="x.pth")


def test_loaded_weights_equal_the_file(lite_file):
    net = EfficientNetLite0(pretrained=True)
    own = net.state_dict()
    for key, value in lite_file.items():
        name = map_lukemelas_key(key)
        if not name.startswith("classifier."):
            assert torch.equal(own[name], value), key


def test_pretrained_output_is_sensible_and_deterministic(pretrained):
    net, fc = pretrained
    x = _normalise(_synthetic_image())
    with torch.no_grad():
        logits = fc(net(x).mean(dim=(2, 3)))
        again = fc(net(x).mean(dim=(2, 3)))
    probs = logits.softmax(dim=1)[0]
    entropy = float(-(probs * probs.log()).sum())
    assert torch.equal(logits, again)  # deterministic in eval mode
    assert float(probs.max()) > 20 / 1000  # far from uniform
    assert entropy < math.log(1000) - 1.0
    # and not what a random network says
    torch.manual_seed(1)
    rand = EfficientNetLite0(pretrained=False, last_stride=2).eval()
    with torch.no_grad():
        rand_feat = rand(x).mean(dim=(2, 3))
        feat = net(x).mean(dim=(2, 3))
    assert not torch.allclose(rand_feat, feat)

    rebuilt = EfficientNetLite0(pretrained=True, last_stride=2).eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), net(x))


@pytest.mark.needs_data
@skip_without_peta
def test_pretrained_recognises_clothing_on_real_pedestrian_crops(pretrained):
    import cv2

    files = sorted((DATA / "peta" / "TownCentre" / "archive").glob("*.jpg"))[::200][:32]
    assert len(files) >= 16
    batch = []
    for f in files:
        im = cv2.imread(str(f))[:, :, ::-1]
        h, w = im.shape[:2]
        side = max(h, w)
        canvas = np.full((side, side, 3), 127, np.uint8)  # pad to a square, keep the person
        canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = im
        batch.append(cv2.resize(canvas, (224, 224), interpolation=cv2.INTER_AREA))
    x = _normalise(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255)
    net, fc = pretrained
    with torch.no_grad():
        top5 = fc(net(x).mean(dim=(2, 3))).topk(5, dim=1).indices.tolist()
    hit = np.mean([bool(set(t) & APPAREL) for t in top5])
    # measured: 0.77 of 64 PETA crops with the shipped weights, 0.0 with random weights
    assert hit >= 0.5, f"only {hit:.2f} of the crops have a clothing class in their top 5"


@pytest.mark.parametrize("last_stride,stride", [(1, 16), (2, 32)])
@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_feature_map_shape_and_stride(last_stride, stride, padding):
    net = EfficientNetLite0(pretrained=False, last_stride=last_stride, padding=padding).eval()
    assert net.stride == stride and net.out_channels == 1280
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 256, 128)).shape == (2, 1280, 256 // stride, 128 // stride)
        out = net(torch.zeros(1, 3, 250, 125))
    assert out.shape[-2:] == (math.ceil(250 / stride), math.ceil(125 / stride))


def test_drop_connect_only_while_training():
    torch.manual_seed(0)
    net = EfficientNetLite0(pretrained=False, drop_connect_rate=0.5)
    x = torch.randn(4, 3, 64, 32)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


def test_registry_builds_by_name_and_lists_known_names():
    net = BACKBONES.build("efficientnet_lite0", pretrained=False, last_stride=2)
    assert isinstance(net, EfficientNetLite0) and net.stride == 32
    assert {"efficientnet_lite0", "resnet50"} <= set(BACKBONES.names())
    with pytest.raises(ConfigError, match="known: .*efficientnet_lite0"):
        BACKBONES.build("vgg16")
    with pytest.raises(ConfigError, match="last_stride"):
        BACKBONES.build("efficientnet_lite0", pretrained=False, last_stride=3)


def test_resnet50_loads_a_real_state_dict_file(tmp_path: pathlib.Path):
    torch.manual_seed(0)
    source = ResNet50(pretrained=False)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"] = torch.randn(1000, 2048)  # a classifier is ignored
    state["module.fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": state}, path)

    torch.manual_seed(1)
    net = BACKBONES.build("resnet50", pretrained=str(path), last_stride=1)
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    net.eval()
    source.eval()
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        out = net(x)
        assert torch.equal(out, source(x))
    assert out.shape == (1, 2048, 4, 2) and net.stride == 16 and net.out_channels == 2048
    assert ResNet50(pretrained=False, last_stride=2).stride == 32


def test_resnet50_refuses_bad_weight_files(tmp_path: pathlib.Path):
    with pytest.raises(ConfigError, match="does not exist"):
        ResNet50(pretrained=tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="garbage.pth"):
        ResNet50(pretrained=garbage)
    wrong = tmp_path / "wrong.pth"
    state = ResNet50(pretrained=False).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    del state["layer4.2.bn3.weight"]
    torch.save(state, wrong)
    with pytest.raises(ConfigError, match=r"wrong.pth.*missing 1 tensors.*shape mismatch"):
        ResNet50(pretrained=wrong)
    with pytest.raises(ConfigError, match="no ResNet-50 weights ship"):
        ResNet50(pretrained=True)


def test_efficientnet_refuses_a_foreign_file(tmp_path: pathlib.Path):
    path = tmp_path / "resnet.pth"
    torch.save(ResNet50(pretrained=False).state_dict(), path)
    with pytest.raises(ConfigError, match="not part of an EfficientNet-Lite0"):
        EfficientNetLite0(pretrained=path)
