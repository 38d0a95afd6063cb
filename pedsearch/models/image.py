"""The image tower: backbone feature map -> SSAN global + part features, APR attribute logits.

Papers (``../shared/papers``):

- SSAN (Ding et al. 2021), Sec. III: the feature map ``F`` is max-pooled globally (GMP) and
  over ``K`` horizontal stripes; a 1x1 conv ``W_g`` (eq. 5) and part-specific 1x1 convs
  ``W_l^k`` (eq. 10) map them into the common space; the multi-view non-local network MV-NLN
  (eqs. 13-16) lets each part attend to the other ``K - 1``. ``W_g``, ``W_l^k`` and MV-NLN are
  *shared with the text tower* (eqs. 6, 11 and Sec. III-C2), so they live in
  :class:`SSANHeads`, one instance referenced by both towers.
- APR (Lin et al. 2019), Sec. 4.2: one FC layer per attribute on the pooled ("pool5") feature,
  after dropout, beside the identity classifier (the identity classifiers are training-only and
  live in :mod:`pedsearch.models.joint`).

Sizes (SSAN defaults ``K=6, M=1024, N=512, M'=512``, ``C=2048`` from ResNet-50) are config
fields of :class:`pedsearch.models.joint.ModelArchitecture`; pedsearch's defaults are a quarter
of them (``M=256, N=128, M'=128``) so the search embedding ``M + K*N = 1024`` fits Milvus' and
the gateway's budget, and ``C=512`` so the Bi-LSTM that must match ``C`` (shared ``W_g``) stays
trainable on a 2-core CPU.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from pedsearch.models.backbone import Backbone


class PartLinear(nn.Module):
    """``K`` independent linear maps, one per part: ``(B, K, in) -> (B, K, out)``.

    The 1x1 convolution ``W^k`` of SSAN applied to a pooled vector is a linear map; stacking the
    ``K`` of them in one ``(K, out, in)`` weight runs them in a single einsum.
    """

    def __init__(self, num_parts: int, in_dim: int, out_dim: int, *, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_parts, out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(num_parts, out_dim)) if bias else None
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default initialisation, per part
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("bki,koi->bko", x, self.weight)
        return y if self.bias is None else y + self.bias


class MultiViewNonLocal(nn.Module):
    """SSAN's multi-view non-local network (MV-NLN), eqs. 13-16.

    For part ``k``: ``S_ki = cos(W_theta^k v_k, W_phi^i v_i)`` (13); ``alpha_ki`` = softmax of
    ``S_ki`` over the other parts ``i != k`` (14); ``v_in^k = W_gamma^k sum_i alpha_ki
    W_phi^i v_i`` (15); ``v_n^k = W_n^k (v_k + v_in^k)`` (16). Every matrix is part-specific
    ("multi-view") and bias-free as in the equations.

    Args:
        num_parts: ``K``.
        dim: ``M``, the size of the input part features.
        relation_dim: ``M'``, the size of the embedding space of the projections.
        out_dim: ``N``, the size of the output part features.
    """

    def __init__(self, *, num_parts: int, dim: int, relation_dim: int, out_dim: int) -> None:
        super().__init__()
        self.theta = PartLinear(num_parts, dim, relation_dim)
        self.phi = PartLinear(num_parts, dim, relation_dim)
        self.gamma = PartLinear(num_parts, relation_dim, dim)
        self.out = PartLinear(num_parts, dim, out_dim)
        self.register_buffer("_self_mask", torch.eye(num_parts, dtype=torch.bool), persistent=False)

    def forward(self, parts: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            parts: ``(B, K, M)`` part features ``v_l``.

        Returns:
            ``(v_n (B, K, N), alpha (B, K, K))``; each row of ``alpha`` sums to 1 over the
            other parts and is 0 on the diagonal.
        """
        theta = self.theta(parts)
        phi = self.phi(parts)
        sim = F.normalize(theta, dim=-1) @ F.normalize(phi, dim=-1).transpose(1, 2)
        alpha = sim.masked_fill(self._self_mask, float("-inf")).softmax(dim=-1)
        interaction = self.gamma(alpha @ phi)
        return self.out(parts + interaction), alpha


class SSANHeads(nn.Module):
    """The layers SSAN shares between the image and the text tower.

    ``W_g`` (eqs. 5-6), the part-specific ``W_l^k`` (eqs. 10-11) and MV-NLN (Sec. III-C2,
    "the parameters of MV-NLN are shared between the two modalities").

    Args:
        feat_dim: ``C``, channels of the visual map = size of the word features.
        num_parts: ``K`` horizontal stripes / word-attention parts.
        global_dim: ``M``, size of the global and of the PFL part features.
        part_dim: ``N``, size of the MV-NLN part features.
        relation_dim: ``M'``, size of the MV-NLN projection space.
    """

    def __init__(
        self, *, feat_dim: int, num_parts: int, global_dim: int, part_dim: int, relation_dim: int
    ) -> None:
        super().__init__()
        self.num_parts = num_parts
        self.global_proj = nn.Linear(feat_dim, global_dim, bias=False)
        self.part_proj = PartLinear(num_parts, feat_dim, global_dim)
        self.relation = MultiViewNonLocal(
            num_parts=num_parts, dim=global_dim, relation_dim=relation_dim, out_dim=part_dim
        )

    def forward(self, pooled: Tensor, pooled_parts: Tensor) -> dict[str, Tensor]:
        """
        Args:
            pooled: ``(B, C)`` GMP of the map / RMP of the word features.
            pooled_parts: ``(B, K, C)`` per-stripe GMP / per-part RMP.

        Returns:
            ``global (B, M)``, ``parts_local (B, K, M)`` (PFL), ``parts (B, K, N)`` (PRL,
            after MV-NLN) and ``part_relation (B, K, K)`` (the ``alpha`` of eq. 14).
        """
        local = self.part_proj(pooled_parts)
        parts, alpha = self.relation(local)
        return {
            "global": self.global_proj(pooled),
            "parts_local": local,
            "parts": parts,
            "part_relation": alpha,
        }


def cosine_scores(a: Tensor, weight: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """CMAAM Eq. 3's arithmetic: ``(B, d_a)`` embeddings, ``(V, d_a)`` classifier ``W``,
    ``(V,)`` ``beta`` and ``z`` -> ``(B, V)`` scores ``beta_j cos(a, W_j) + z_j``
    (``training.losses.cmaam.cosine_attribute_scores`` checks its inputs, then calls this)."""
    return F.normalize(a, dim=-1) @ F.normalize(weight, dim=-1).t() * scale + bias


class CosineAttributeClassifier(nn.Module):
    """CMAAM's attribute classifier (Eq. 3): ``S(l_j | x) = beta_j S_cos(a_x, W_j) + z_j``.

    One instance is shared by the image and the text tower, as CMAAM builds one classifier
    ``W`` for its common attribute space: both modalities' scores then have the same scale
    ``beta`` (bounded by ``|beta| + |z|``), which is what its Deep CORAL term (Eq. 5) compares.

    Args:
        dim: ``d_a``, the attribute space's size (CMAAM: 300).
        schema: the attribute schema (one score per value, flat layout).
        scale: initial ``beta`` of every value (learnt; the paper does not give its start).
    """

    def __init__(self, dim: int, schema: AttributeSchema, *, scale: float = 10.0) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.randn(schema.dim, dim) * 0.01)
        self.scale = nn.Parameter(torch.full((schema.dim,), float(scale)))
        self.bias = nn.Parameter(torch.zeros(schema.dim))

    def forward(self, a: Tensor) -> Tensor:
        """``(B, d_a)`` attribute-space embeddings -> ``(B, schema.dim)`` scores (logits)."""
        return cosine_scores(a, self.weight, self.scale, self.bias)


class AttributeHead(nn.Module):
    """A tower's attribute head: pooled feature -> flat attribute logits ``(B, schema.dim)``.

    Two forms (``ModelArchitecture.attr_classifier``):

    - ``linear`` (APR, Sec. 4.2): dropout, then one FC layer per schema family (APR puts ``M``
      FC layers ``FC_1..FC_M`` on the pooled feature, an ``m``-way one for an attribute with
      ``m`` classes). The logits are also what CMAAM's losses take as the attribute space.
    - ``cosine`` (CMAAM, Sec. 3.2): dropout, a linear map to the ``d_a``-dim attribute space
      ``a_x``, then the :class:`CosineAttributeClassifier` both towers share.

    The logits are concatenated in schema order: softmax groups for ``single`` families,
    independent sigmoids for ``multi`` ones (see :func:`attribute_probs`).

    Args:
        in_dim: size of the pooled feature.
        schema: the attribute schema.
        dropout: dropout before the FC layers / the projection (APR: 0.9).
        classifier: the shared cosine classifier (``cosine`` form); None for ``linear``.
    """

    def __init__(self, in_dim: int, schema: AttributeSchema, *, dropout: float = 0.9,
                 classifier: CosineAttributeClassifier | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier
        if classifier is None:
            self.fc = nn.ModuleDict(
                {f.name: nn.Linear(in_dim, len(f.values)) for f in schema.families})
        else:
            self.project = nn.Linear(in_dim, classifier.dim)

    def embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, in_dim)`` -> ``(logits (B, schema.dim), attribute space (B, d))``: ``a_x``
        (``d = d_a``) for the cosine form, the logits themselves for the linear one."""
        x = self.dropout(x)
        if self.classifier is None:
            logits = torch.cat([fc(x) for fc in self.fc.values()], dim=-1)
            return logits, logits
        a = self.project(x)
        return self.classifier(a), a

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(x)[0]


def attribute_probs(logits: Tensor, schema: AttributeSchema) -> Tensor:
    """Flat attribute logits ``(..., schema.dim)`` -> probabilities of the same shape.

    Softmax within each ``single`` family (its values sum to 1), sigmoid for each value of a
    ``multi`` family.
    """
    if logits.shape[-1] != schema.dim:
        raise InvalidInput(f"attribute logits have {logits.shape[-1]} values; the schema has "
                           f"{schema.dim}")
    chunks = []
    for fam in schema.families:
        part = logits[..., fam.slice]
        chunks.append(part.softmax(dim=-1) if fam.kind == "single" else part.sigmoid())
    return torch.cat(chunks, dim=-1)


class ImageEncoder(nn.Module):
    """Backbone -> neck -> SSAN global + stripe features, and APR attribute logits.

    Args:
        backbone: a :class:`~pedsearch.models.backbone.Backbone` (feature map ``(B, Cb, h, w)``).
        heads: the :class:`SSANHeads` shared with the text tower.
        schema: attribute schema of the APR head.
        feat_dim: ``C``; a 1x1 conv + BN + ReLU "neck" maps ``Cb -> C`` when they differ
            (EfficientNet-Lite0: 1280 -> 512), nothing when equal (ResNet-50 with C=2048).
        attr_dropout: dropout of the APR head.
        attr_classifier: CMAAM's cosine classifier shared with the text tower, or None for
            APR's per-family FC layers (see :class:`AttributeHead`).

    The APR head reads the global average of the *backbone* map (APR's "pool5"); the SSAN
    branches read the neck's map ``F`` with max pooling (GMP), stripes taken top to bottom with
    adaptive max pooling (equal, non-overlapping stripes when ``h`` is a multiple of ``K``).
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        heads: SSANHeads,
        schema: AttributeSchema,
        feat_dim: int,
        attr_dropout: float = 0.9,
        attr_classifier: CosineAttributeClassifier | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        cb = backbone.out_channels
        self.neck: nn.Module = (
            nn.Identity()
            if cb == feat_dim
            else nn.Sequential(
                nn.Conv2d(cb, feat_dim, 1, bias=False), nn.BatchNorm2d(feat_dim), nn.ReLU(True)
            )
        )
        self.attr_head = AttributeHead(cb, schema, dropout=attr_dropout,
                                       classifier=attr_classifier)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """
        Args:
            images: ``(B, 3, H, W)`` normalised RGB.

        Returns:
            ``global (B, M)``, ``parts_local (B, K, M)``, ``parts (B, K, N)``,
            ``part_relation (B, K, K)``, ``attr_logits (B, schema.dim)`` and ``attr_space``
            (the attribute-space embedding, see :meth:`AttributeHead.embed`).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise InvalidInput(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        fmap = self.backbone(images)
        attr_logits, attr_space = self.attr_head.embed(fmap.mean(dim=(2, 3)))
        fmap = self.neck(fmap)
        pooled = fmap.amax(dim=(2, 3))
        stripes = F.adaptive_max_pool2d(fmap, (self.heads.num_parts, 1)).flatten(2).transpose(1, 2)
        out = self.heads(pooled, stripes)
        out["attr_logits"], out["attr_space"] = attr_logits, attr_space
        return out


def preprocess_crops(
    crops: Sequence[np.ndarray],
    *,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """BGR uint8 crops of any size -> one normalised RGB batch ``(B, 3, H, W)`` float32.

    Each crop is resized (bilinear; area when shrinking) to ``size = (H, W)`` ignoring its
    aspect ratio, as the papers' training pipelines do; grey ``(h, w)`` / ``(h, w, 1)`` crops
    are replicated to three channels.

    Raises:
        InvalidInput: a crop is not a uint8 array of shape ``(h, w)``, ``(h, w, 1)`` or
            ``(h, w, 3)`` with ``h, w >= 1``; the message names its index.
    """
    height, width = size
    batch = np.empty((len(crops), height, width, 3), np.uint8)
    for i, crop in enumerate(crops):
        if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8:
            kind = getattr(crop, "dtype", type(crop).__name__)
            raise InvalidInput(f"crop {i} must be a uint8 numpy array (BGR), got {kind}")
        if crop.ndim == 3 and crop.shape[2] == 1:
            crop = crop[:, :, 0]
        if crop.ndim not in (2, 3) or (crop.ndim == 3 and crop.shape[2] != 3):
            raise InvalidInput(f"crop {i} must be (h, w, 3) BGR, got shape {crop.shape}")
        if crop.shape[0] < 1 or crop.shape[1] < 1:
            raise InvalidInput(f"crop {i} is empty (shape {crop.shape})")
        shrink = crop.shape[0] > height and crop.shape[1] > width
        resized = cv2.resize(
            crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        if resized.ndim == 2:
            resized = resized[:, :, None]
        batch[i] = resized[:, :, ::-1]  # BGR -> RGB (broadcasts a grey channel)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)
