"""AAIPR attribute -> concept generator (paper's Table 1) and concept discriminator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pedsearch.errors import InvalidInput
from pedsearch.models.concept import ConceptDiscriminator, ConceptGenerator


def test_generator_follows_the_layer_table():
    """AAIPR Table 1: fc1 A x 128, BN, ReLU, fc2 128 x 256, BN, ReLU, fc3 256 x 512, BN, ReLU,
    fc4 512 x embeddingSize, Tanh."""
    gen = ConceptGenerator(attr_dim=48, embed_dim=1024)
    layers = list(gen.net.named_children())
    assert [name for name, _ in layers] == [
        "fc1", "bn1", "relu1", "fc2", "bn2", "relu2", "fc3", "bn3", "relu3", "fc4", "tanh"
    ]
    kinds = [type(m) for _, m in layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 3 + [nn.Linear, nn.Tanh]
    sizes = [(m.in_features, m.out_features) for _, m in layers if isinstance(m, nn.Linear)]
    assert sizes == [(48, 128), (128, 256), (256, 512), (512, 1024)]
    assert [m.num_features for _, m in layers if isinstance(m, nn.BatchNorm1d)] == [128, 256, 512]


def test_generator_output_range_and_shape():
    torch.manual_seed(0)
    gen = ConceptGenerator(attr_dim=10, embed_dim=16)
    attrs = (torch.rand(8, 10) > 0.5).float()
    gen.train()
    c = gen(attrs)
    assert c.shape == (8, 16) and torch.all(c.abs() < 1)
    gen.eval()
    assert gen(attrs[:1]).shape == (1, 16)  # a single query works in eval mode
    with pytest.raises(InvalidInput, match=r"\(B, 10\)"):
        gen(torch.zeros(2, 11))


def test_discriminator_layers_and_sigmoid_output():
    torch.manual_seed(0)
    disc = ConceptDiscriminator(embed_dim=16, hidden=(8, 4)).eval()
    names = [n for n, _ in disc.net.named_children()]
    assert names == ["fc1", "bn1", "lrelu1", "fc2", "bn2", "lrelu2", "out"]
    x = torch.randn(5, 16)
    p = disc(x)
    assert p.shape == (5,) and torch.all((p > 0) & (p < 1))
    torch.testing.assert_close(p, torch.sigmoid(disc.logits(x)))
