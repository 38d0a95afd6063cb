"""Image tower: SSAN stripes and MV-NLN, APR attribute head, crop preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from pedsearch.models.backbone import Backbone, EfficientNetLite0
from pedsearch.models.image import (
    AttributeHead,
    CosineAttributeClassifier,
    ImageEncoder,
    MultiViewNonLocal,
    PartLinear,
    SSANHeads,
    attribute_probs,
    preprocess_crops,
)

SCHEMA = AttributeSchema.default()


def test_part_linear_is_one_linear_map_per_part():
    torch.manual_seed(0)
    layer = PartLinear(3, 5, 4, bias=True)
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 3, 5)
    y = layer(x)
    for k in range(3):
        expected = x[:, k] @ layer.weight[k].T + layer.bias[k]
        torch.testing.assert_close(y[:, k], expected)


def _mvnln_by_the_equations(m: MultiViewNonLocal, v: torch.Tensor) -> torch.Tensor:
    """SSAN eqs. 13-16 written out with loops, for one sample ``v (K, M)``."""
    K = v.shape[0]
    theta = [m.theta.weight[k] @ v[k] for k in range(K)]
    phi = [m.phi.weight[i] @ v[i] for i in range(K)]
    out = []
    for k in range(K):
        others = [i for i in range(K) if i != k]
        s = torch.stack([F.cosine_similarity(theta[k], phi[i], dim=0) for i in others])  # (13)
        alpha = torch.exp(s) / torch.exp(s).sum()  # (14)
        agg = sum(a * phi[i] for a, i in zip(alpha, others))
        v_in = m.gamma.weight[k] @ agg  # (15)
        out.append(m.out.weight[k] @ (v[k] + v_in))  # (16)
    return torch.stack(out)


def test_multi_view_non_local_follows_ssan_equations():
    torch.manual_seed(0)
    m = MultiViewNonLocal(num_parts=4, dim=6, relation_dim=3, out_dim=5)
    v = torch.randn(2, 4, 6)
    out, alpha = m(v)
    assert out.shape == (2, 4, 5) and alpha.shape == (2, 4, 4)
    torch.testing.assert_close(alpha.sum(dim=-1), torch.ones(2, 4))  # eq. 14 normalises over i
    assert torch.all(alpha.diagonal(dim1=1, dim2=2) == 0)  # ... over the other parts only
    for b in range(2):
        torch.testing.assert_close(out[b], _mvnln_by_the_equations(m, v[b]), atol=1e-5,
                                   rtol=1e-5)


class _PixelsAsFeatures(Backbone):
    """A stand-in backbone that returns the image itself, to check the pooling geometry."""

    def __init__(self) -> None:
        super().__init__()
        self.out_channels, self.stride = 3, 1
        self.pixel_mean, self.pixel_std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_stripes_are_horizontal_bands_top_to_bottom():
    heads = SSANHeads(feat_dim=3, num_parts=3, global_dim=4, part_dim=2, relation_dim=2)
    enc = ImageEncoder(backbone=_PixelsAsFeatures(), heads=heads, schema=SCHEMA, feat_dim=3).eval()
    captured = {}
    heads.register_forward_hook(lambda mod, args, out: captured.update(args=args))
    img = torch.zeros(1, 3, 6, 4)
    img[0, 0, 0:2] = 1.0  # top band: channel 0
    img[0, 1, 2:4, 1] = 2.0  # middle band: channel 1 (one pixel column)
    img[0, 2, 5, 3] = 3.0  # bottom band: channel 2 (one pixel)
    enc(img)
    pooled, stripes = captured["args"]
    torch.testing.assert_close(pooled, torch.tensor([[1.0, 2.0, 3.0]]))  # GMP over the map
    torch.testing.assert_close(
        stripes, torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]])
    )


def test_image_encoder_shapes_with_the_real_backbone():
    heads = SSANHeads(feat_dim=64, num_parts=6, global_dim=32, part_dim=16, relation_dim=8)
    backbone = EfficientNetLite0(pretrained=False, last_stride=1)
    enc = ImageEncoder(backbone=backbone, heads=heads, schema=SCHEMA, feat_dim=64).eval()
    with torch.no_grad():
        out = enc(torch.randn(3, 3, 128, 64))
    assert out["global"].shape == (3, 32)
    assert out["parts_local"].shape == (3, 6, 32)
    assert out["parts"].shape == (3, 6, 16)
    assert out["part_relation"].shape == (3, 6, 6)
    assert out["attr_logits"].shape == (3, SCHEMA.dim)
    with pytest.raises(InvalidInput, match=r"\(B, 3, H, W\)"):
        enc(torch.zeros(3, 128, 64))


def test_attribute_head_has_one_fc_per_family():
    head = AttributeHead(10, SCHEMA, dropout=0.9)
    assert list(head.fc) == [f.name for f in SCHEMA.families]
    for fam in SCHEMA.families:
        assert head.fc[fam.name].out_features == len(fam.values)
    head.eval()
    assert head(torch.randn(4, 10)).shape == (4, SCHEMA.dim)


def test_cosine_attribute_classifier_is_cmaam_eq3():
    # S(l_j | x) = beta_j cos(a, W_j) + z_j, worked by hand on a 2-d attribute space
    clf = CosineAttributeClassifier(2, SCHEMA, scale=10.0)
    with torch.no_grad():
        clf.weight.zero_()
        clf.weight[0] = torch.tensor([3.0, 0.0])   # cos with a = 1
        clf.weight[1] = torch.tensor([0.0, 5.0])   # cos with a = 0
        clf.weight[2] = torch.tensor([-1.0, 1.0])  # cos with a = -1 / sqrt(2)
        clf.scale[1] = 4.0
        clf.bias[2] = 0.5
    scores = clf(torch.tensor([[2.0, 0.0]]))
    assert scores.shape == (1, SCHEMA.dim)
    torch.testing.assert_close(scores[0, :3], torch.tensor([10.0, 0.0, 0.5 - 10 / 2 ** 0.5]))
    # scores are bounded by |beta| + |z| whatever the feature's norm
    assert float(clf(torch.randn(8, 2) * 1e3).detach().abs().max()) <= 10.0 + 0.5 + 1e-4


def test_cosine_attribute_head_maps_to_the_attribute_space_first():
    clf = CosineAttributeClassifier(6, SCHEMA)
    head = AttributeHead(10, SCHEMA, dropout=0.0, classifier=clf)
    assert not hasattr(head, "fc") and head.project.out_features == 6
    x = torch.randn(4, 10)
    logits, space = head.embed(x)
    assert space.shape == (4, 6)
    torch.testing.assert_close(logits, clf(head.project(x)))
    torch.testing.assert_close(head(x), logits)
    # the linear form's attribute space is its logits
    linear = AttributeHead(10, SCHEMA, dropout=0.0)
    logits, space = linear.embed(x)
    assert space is logits and logits.shape == (4, SCHEMA.dim)


def test_attribute_probs_softmax_per_single_sigmoid_per_multi():
    torch.manual_seed(0)
    logits = torch.randn(5, SCHEMA.dim) * 3
    probs = attribute_probs(logits, SCHEMA)
    for fam in SCHEMA.families:
        p = probs[:, fam.slice]
        if fam.kind == "single":
            torch.testing.assert_close(p.sum(dim=1), torch.ones(5))
        else:
            torch.testing.assert_close(p, torch.sigmoid(logits[:, fam.slice]))
    with pytest.raises(InvalidInput, match="schema has"):
        attribute_probs(torch.zeros(2, 3), SCHEMA)


def test_preprocess_resizes_normalises_and_swaps_bgr_to_rgb():
    blue_bgr = np.zeros((300, 90, 3), np.uint8)
    blue_bgr[:, :, 0] = 255  # OpenCV's channel 0 is blue
    grey = np.full((40, 20), 128, np.uint8)
    x = preprocess_crops([blue_bgr, grey, grey[:, :, None]], size=(64, 32),
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert x.shape == (3, 3, 64, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, 2], torch.ones(64, 32))  # RGB: blue is channel 2
    torch.testing.assert_close(x[0, 0], -torch.ones(64, 32))
    torch.testing.assert_close(x[1], torch.full((3, 64, 32), 128 / 255 * 2 - 1))
    torch.testing.assert_close(x[1], x[2])


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((10, 10, 3), np.float32), "crop 1 must be a uint8"),
        (np.zeros((10, 10, 4), np.uint8), r"crop 1 must be \(h, w, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), "crop 1 is empty"),
        ("not an image", "crop 1 must be a uint8"),
    ],
)
def test_preprocess_names_the_bad_crop(bad, match):
    good = np.zeros((20, 10, 3), np.uint8)
    with pytest.raises(InvalidInput, match=match):
        preprocess_crops([good, bad], size=(64, 32), mean=(0, 0, 0), std=(1, 1, 1))
