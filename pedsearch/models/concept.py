"""AAIPR's attribute branch: the attribute -> concept generator and the concept discriminator.

AAIPR (Yin et al. 2018, "Adversarial Attribute-Image Person Re-identification"), Sec. 3.3: the
generator ``Phi_A`` maps an attribute vector to an *image-analogous concept*; the discriminator
``D`` tells those concepts from the image concepts ``Phi_I(I)``; adversarial training (eqs. 4-5)
plus a shared semantic-ID classifier (eq. 6, in :mod:`pedsearch.models.joint`) aligns the two.

Generator, Table 1 of the paper, layer by layer (module names as in the table)::

    fc1  attributeSize x 128   bn1  relu1
    fc2  128 x 256             bn2  relu2
    fc3  256 x 512             bn3  relu3
    fc4  512 x embeddingSize   tanh

Discriminator (Sec. 3.3): "a combination of fully connected layers, each followed by batch
normalization and leaky ReLU, except for the output layer, which is processed by the Sigmoid".
The paper gives no sizes; pedsearch mirrors the generator (``512, 256, 128``) and uses slope 0.2.

pedsearch's embedding size is the joint search space ``D`` (not the paper's 128), because the
concept is compared with image *and* text embeddings in one Milvus vector field; the joint model
L2-normalises the ``tanh`` output part by part exactly like an image embedding.

An attribute vector is the schema's flat ``target`` (``AttributeSchema.encode``): one-hot per
``single`` family, multi-hot per ``multi`` family, and all zeros for a family the query leaves
open -- so partial queries ("female, red upper body") are inputs of the same kind.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import Tensor, nn

from pedsearch.errors import InvalidInput

#: AAIPR Table 1 hidden sizes of the generator.
GENERATOR_HIDDEN = (128, 256, 512)
#: pedsearch's discriminator hidden sizes (the paper gives none).
DISCRIMINATOR_HIDDEN = (512, 256, 128)


class ConceptGenerator(nn.Module):
    """``Phi_A``: attribute vector ``(B, A)`` -> concept ``(B, D)`` in ``(-1, 1)``.

    Args:
        attr_dim: ``A`` = ``schema.dim``.
        embed_dim: ``D``, the joint embedding size.
        hidden: hidden layer sizes (AAIPR Table 1: 128, 256, 512).
    """

    def __init__(
        self, *, attr_dim: int, embed_dim: int, hidden: Sequence[int] = GENERATOR_HIDDEN
    ) -> None:
        super().__init__()
        self.attr_dim = attr_dim
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = attr_dim
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"bn{i}"] = nn.BatchNorm1d(h)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            width = h
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, embed_dim)
        layers["tanh"] = nn.Tanh()
        self.net = nn.Sequential(layers)

    def forward(self, attrs: Tensor) -> Tensor:
        """
        Args:
            attrs: ``(B, A)`` float attribute vectors.

        Returns:
            ``(B, D)`` concepts (tanh range).
        """
        if attrs.ndim != 2 or attrs.shape[1] != self.attr_dim:
            raise InvalidInput(f"attribute vectors must be (B, {self.attr_dim}), got "
                               f"{tuple(attrs.shape)}")
        return self.net(attrs)


class ConceptDiscriminator(nn.Module):
    """``D``: concept ``(B, D)`` -> probability ``(B,)`` that it is an image concept.

    :meth:`logits` returns the pre-sigmoid score for numerically stable losses
    (``binary_cross_entropy_with_logits``); ``forward`` applies the paper's Sigmoid.

    Args:
        embed_dim: ``D``.
        hidden: hidden layer sizes, each FC followed by BatchNorm and LeakyReLU.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        hidden: Sequence[int] = DISCRIMINATOR_HIDDEN,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = embed_dim
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"bn{i}"] = nn.BatchNorm1d(h)
            layers[f"lrelu{i}"] = nn.LeakyReLU(negative_slope, inplace=True)
            width = h
        layers["out"] = nn.Linear(width, 1)
        self.net = nn.Sequential(layers)
        self.sigmoid = nn.Sigmoid()

    def logits(self, concepts: Tensor) -> Tensor:
        """``(B, D) -> (B,)`` scores before the Sigmoid."""
        return self.net(concepts).squeeze(-1)

    def forward(self, concepts: Tensor) -> Tensor:
        return self.sigmoid(self.logits(concepts))
