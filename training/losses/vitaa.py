"""ViTAA (Wang et al., "ViTAA: Visual-textual attributes alignment in person search by natural
language", ECCV 2020).

Global and per-attribute (body part / accessory) features of both modalities are aligned by a
logistic alignment loss (Eq. 3): positives pushed above ``alpha``, negatives below ``beta``,
with temperatures ``tau_p``/``tau_n``. At the attribute level, positives are widened beyond the
identity by k-reciprocal "surrogate positives" (Algorithm 1). The total is
``L_id + L_seg + L_align^glo + L_align^attr`` (Eq. 5); the ID loss is
:func:`training.losses.identity.cross_modal_identity_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from pedsearch.errors import InvalidInput
from training.losses import (
    LossConfig,
    check_float,
    check_labels,
    check_mask,
    check_nonempty,
    check_same_shape,
    register_loss,
)


class VitaaAlignmentConfig(LossConfig):
    alpha: float = Field(
        0.6, ge=-1.0, le=1.0,
        description="ViTAA Eq. 3 alpha, lower bound of positive cosine similarity; 0.6 (Sec. 4.1)",
    )
    beta: float = Field(
        0.4, ge=-1.0, le=1.0,
        description="ViTAA Eq. 3 beta = alpha - m, upper bound of negative similarity; 0.4",
    )
    tau_p: float = Field(
        10.0, gt=0.0, le=1000.0, description="ViTAA Eq. 3 positive temperature tau_p; 10"
    )
    tau_n: float = Field(
        40.0, gt=0.0, le=1000.0, description="ViTAA Eq. 3 negative temperature tau_n; 40"
    )

    @model_validator(mode="after")
    def _beta_below_alpha(self) -> "VitaaAlignmentConfig":
        if self.beta > self.alpha:
            raise ValueError(
                f"beta ({self.beta}) must not exceed alpha ({self.alpha}): ViTAA sets "
                "beta = alpha - m with a margin m >= 0"
            )
        return self


class VitaaAttributeAlignmentConfig(VitaaAlignmentConfig):
    k: int = Field(
        8, ge=1, le=4096,
        description="ViTAA Algorithm 1 K of k-reciprocal sampling; best at 8 (Fig. 5a)",
    )
    surrogate: bool = Field(
        True,
        description="ViTAA Sec. 3.3: add k-reciprocal surrogate positives to the identity "
        "positives at the attribute level; True",
    )


class VitaaSegmentationConfig(LossConfig):
    ignore_index: int = Field(
        -1,
        description="pixel label excluded from ViTAA's auxiliary segmentation loss (Eq. 5 L_seg); "
        "the paper labels torso/background pixels as background, so -1 marks only unlabelled ones",
    )


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(-1, -2)


def identity_positive_mask(labels: torch.Tensor) -> torch.Tensor:
    """Pairs of the same identity are positives.

    Args:
        labels: ``(B,)`` int64 identities.

    Returns:
        ``(B, B)`` bool, True where ``labels[i] == labels[j]``.
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise InvalidInput("labels must be a (B,) int64 tensor of identities")
    check_labels("labels", labels, labels.shape[0])
    return labels[:, None] == labels[None, :]


@register_loss("vitaa_alignment", VitaaAlignmentConfig)
def alignment_loss(
    visual: torch.Tensor,
    textual: torch.Tensor,
    positive_mask: torch.Tensor,
    visual_valid: torch.Tensor | None = None,
    textual_valid: torch.Tensor | None = None,
    *,
    alpha: float = 0.6,
    beta: float = 0.4,
    tau_p: float = 10.0,
    tau_n: float = 40.0,
) -> torch.Tensor:
    """Logistic alignment loss over all pairs of a batch (ViTAA Eq. 3).

    ``log(1 + e^{-tau_p (S+ - alpha)})`` for every positive pair and
    ``log(1 + e^{tau_n (S- - beta)})`` for every negative pair, ``S`` the cosine similarity.
    Both triplet forms ``<v_i, t+, t->`` and ``<t_i, v+, v->`` are taken; they enumerate the
    same (visual, text) pairs, so the result is ``2 / B`` times the sum over valid pairs.

    Args:
        visual: ``(B, D)`` visual features (global or one attribute).
        textual: ``(B, D)`` textual features; row ``b`` pairs with visual row ``b``.
        positive_mask: ``(B, B)`` bool/0-1, ``[i, j]`` True when text ``j`` is a positive for
            image ``i`` (same identity, or a surrogate positive).
        visual_valid: optional ``(B,)`` 0/1, 0 where the image lacks this attribute.
        textual_valid: optional ``(B,)`` 0/1, 0 where the text mentions no such attribute;
            pairs with an invalid side contribute nothing.
        alpha: ViTAA's alpha (0.6).
        beta: ViTAA's beta (0.4).
        tau_p: ViTAA's tau_p (10).
        tau_n: ViTAA's tau_n (40).

    Returns:
        Scalar ``L_align``; 0 when no pair is valid.
    """
    check_float("visual", visual, 2)
    check_float("textual", textual, 2)
    check_nonempty("visual", visual)
    check_same_shape("visual", visual, "textual", textual)
    b = visual.shape[0]
    pos = check_mask("positive_mask", positive_mask, (b, b))
    if beta > alpha:
        raise InvalidInput(f"beta ({beta}) must not exceed alpha ({alpha})")
    valid = torch.ones(b, b, dtype=torch.bool, device=visual.device)
    if visual_valid is not None:
        valid = valid & check_mask("visual_valid", visual_valid, (b,))[:, None]
    if textual_valid is not None:
        valid = valid & check_mask("textual_valid", textual_valid, (b,))[None, :]
    sim = _cosine_matrix(visual, textual)
    # log(1 + e^x) = softplus(x), finite for the large tau_n * S the negatives can reach
    loss_pos = F.softplus(-tau_p * (sim - alpha))
    loss_neg = F.softplus(tau_n * (sim - beta))
    per_pair = torch.where(pos, loss_pos, loss_neg)
    per_pair = torch.where(valid, per_pair, torch.zeros_like(per_pair))
    # Visual anchors sum the rows and textual anchors the columns of the same pair matrix, each
    # divided by the B anchors: together twice the sum.
    return 2.0 * per_pair.sum() / b


def k_reciprocal_positive_mask(
    similarity: torch.Tensor,
    *,
    k: int = 8,
    visual_valid: torch.Tensor | None = None,
    textual_valid: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Surrogate positives by k-reciprocal nearest neighbours (ViTAA Algorithm 1).

    Text ``j`` is a surrogate positive of image ``i`` when ``j`` is among the top-K texts of
    ``i`` and ``i`` is among the top-K images of ``j``. Invalid samples (attribute missing in
    that modality) are never neighbours. ``K`` larger than the valid candidates means all.

    Args:
        similarity: ``(Nv, Nt)`` similarity of image ``i`` and text ``j`` for one attribute.
        k: ViTAA's K (8).
        visual_valid: optional ``(Nv,)`` 0/1.
        textual_valid: optional ``(Nt,)`` 0/1.
        labels: optional ``(N,)`` identities of paired samples (``Nv == Nt == N``); when given,
            the same-identity pairs are added, giving the positive set the alignment uses.

    Returns:
        ``(Nv, Nt)`` bool mask (no gradient).
    """
    check_float("similarity", similarity, 2)
    if k < 1:
        raise InvalidInput(f"k must be >= 1, got {k}")
    nv, nt = similarity.shape
    sim = similarity.detach()
    row_ok = torch.ones(nv, dtype=torch.bool, device=sim.device)
    col_ok = torch.ones(nt, dtype=torch.bool, device=sim.device)
    if visual_valid is not None:
        row_ok = check_mask("visual_valid", visual_valid, (nv,))
    if textual_valid is not None:
        col_ok = check_mask("textual_valid", textual_valid, (nt,))
    valid = row_ok[:, None] & col_ok[None, :]
    mask = torch.zeros(nv, nt, dtype=torch.bool, device=sim.device)
    if nv > 0 and nt > 0:
        masked = torch.where(valid, sim, torch.full_like(sim, -torch.inf))
        top_texts = masked.topk(min(k, nt), dim=1).indices  # (Nv, k): K_T of each image
        in_text_knn = torch.zeros_like(mask).scatter_(1, top_texts, True)
        top_images = masked.topk(min(k, nv), dim=0).indices  # (k, Nt): K_V of each text
        in_image_knn = torch.zeros_like(mask).scatter_(0, top_images, True)
        mask = in_text_knn & in_image_knn & valid
    if labels is not None:
        if nv != nt:
            raise InvalidInput("labels need paired samples: similarity must be square")
        check_labels("labels", labels, nv)
        mask = mask | ((labels[:, None] == labels[None, :]) & valid)
    return mask


@register_loss("vitaa_attribute_alignment", VitaaAttributeAlignmentConfig)
def attribute_alignment_loss(
    visual_parts: torch.Tensor,
    textual_parts: torch.Tensor,
    labels: torch.Tensor,
    visual_valid: torch.Tensor | None = None,
    textual_valid: torch.Tensor | None = None,
    *,
    k: int = 8,
    surrogate: bool = True,
    alpha: float = 0.6,
    beta: float = 0.4,
    tau_p: float = 10.0,
    tau_n: float = 40.0,
) -> torch.Tensor:
    """Attribute-level alignment with k-reciprocal surrogate positives (ViTAA Eq. 3, Alg. 1).

    For each attribute ``a``, positives are the same-identity pairs plus (``surrogate``) the
    k-reciprocal neighbours on that attribute's cosine similarity; :func:`alignment_loss` is
    then taken over the pairs valid in both modalities.

    Args:
        visual_parts: ``(B, P, D)`` visual attribute features ``v_1..v_P``.
        textual_parts: ``(B, P, D)`` textual attribute features ``t_1..t_P``.
        labels: ``(B,)`` int64 identities.
        visual_valid: optional ``(B, P)`` 0/1 (0 = the image has no such region).
        textual_valid: optional ``(B, P)`` 0/1 (0 = the sentence has no such phrase).
        k: ViTAA's K (8).
        surrogate: add surrogate positives (True); False uses identity positives only.
        alpha, beta, tau_p, tau_n: ViTAA's values (0.6, 0.4, 10, 40).

    Returns:
        Scalar: mean over the attributes that have at least one valid pair; 0 if none has.
    """
    check_float("visual_parts", visual_parts, 3)
    check_float("textual_parts", textual_parts, 3)
    check_nonempty("visual_parts", visual_parts)
    check_same_shape("visual_parts", visual_parts, "textual_parts", textual_parts)
    b, p, _ = visual_parts.shape
    check_labels("labels", labels, b)
    vv = (
        torch.ones(b, p, dtype=torch.bool, device=visual_parts.device)
        if visual_valid is None
        else check_mask("visual_valid", visual_valid, (b, p))
    )
    tv = (
        torch.ones(b, p, dtype=torch.bool, device=visual_parts.device)
        if textual_valid is None
        else check_mask("textual_valid", textual_valid, (b, p))
    )
    same_id = labels[:, None] == labels[None, :]
    total = visual_parts.new_zeros(())
    used = 0
    for a in range(p):
        if not bool(vv[:, a].any() and tv[:, a].any()):
            continue
        v, t = visual_parts[:, a], textual_parts[:, a]
        positives = same_id
        if surrogate:
            positives = positives | k_reciprocal_positive_mask(
                _cosine_matrix(v, t), k=k, visual_valid=vv[:, a], textual_valid=tv[:, a]
            )
        total = total + alignment_loss(
            v, t, positives, vv[:, a], tv[:, a], alpha=alpha, beta=beta, tau_p=tau_p, tau_n=tau_n
        )
        used += 1
    return total / max(used, 1)


@register_loss("vitaa_segmentation", VitaaSegmentationConfig)
def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -1
) -> torch.Tensor:
    """Pixel-wise cross-entropy of the auxiliary attribute segmentation (ViTAA Eq. 5, L_seg).

    Args:
        logits: ``(B, C, H, W)`` per-pixel attribute-category scores.
        targets: ``(B, H, W)`` int64 category per pixel, ``ignore_index`` where unlabelled.
        ignore_index: label excluded from the loss (-1).

    Returns:
        Scalar mean CE over the labelled pixels; 0 when no pixel is labelled.
    """
    check_float("logits", logits, 4)
    if targets.is_floating_point() or targets.shape != (
        logits.shape[0], logits.shape[2], logits.shape[3]
    ):
        raise InvalidInput(
            f"targets must be an int64 (B, H, W) map matching logits {tuple(logits.shape)}, "
            f"got {targets.dtype} {tuple(targets.shape)}"
        )
    labelled = targets != ignore_index
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    lo, hi = int(targets[labelled].min()), int(targets[labelled].max())
    if lo < 0 or hi >= logits.shape[1]:
        raise InvalidInput(
            f"segmentation targets must lie in [0, {logits.shape[1]}) or be {ignore_index}, "
            f"got values in [{lo}, {hi}]"
        )
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)
