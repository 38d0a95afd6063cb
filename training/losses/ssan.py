"""SSAN (Ding et al., "Semantically self-aligned network for text-to-image part-aware person
re-identification").

The compound ranking (CR) loss (Eq. 19) adds to the bidirectional hardest-negative ranking loss
(Eq. 18) two weakly supervised terms whose positive is a description of *another* image of the
same identity, with a margin adapted to how well that description fits (Eqs. 20-21). SSAN
applies CR + the cross-modal ID loss to three kinds of features -- global, the K part features
of PFL and the K part features of PRL (MV-NLN) -- weighted 1, 0.5, 0.5; the CR loss acts on the
concatenated K part features, the ID loss on each part.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from pedsearch.errors import InvalidInput
from training.losses import (
    LossConfig,
    check_float,
    check_labels,
    check_nonempty,
    check_same_shape,
    register_loss,
)

# The adaptive-margin ratio S(I_p, D_p') / S(I_p, D_p) needs a positive denominator.
_EPS = 1e-6

_ALPHA1 = Field(
    0.2, ge=0.0, le=2.0,
    description="SSAN Eq. 19 alpha_1, margin of the strong terms (0.2, Sec. V-A, after ViTAA)",
)
_BETA = Field(
    0.1, ge=0.0, le=100.0,
    description="SSAN Eq. 19 beta, weight of the weak supervision terms (0.1, Sec. V-A)",
)


class SsanCompoundRankingConfig(LossConfig):
    alpha1: float = _ALPHA1
    beta: float = _BETA


class SsanLossConfig(LossConfig):
    alpha1: float = _ALPHA1
    beta: float = _BETA
    branch_weights: tuple[float, ...] = Field(
        (1.0, 0.5, 0.5),
        description="SSAN Sec. IV weights of the loss terms of the global, PFL part and PRL "
        "part features: 1, 0.5, 0.5",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="ID-loss label smoothing; SSAN uses none (0.0)"
    )

    @field_validator("branch_weights")
    @classmethod
    def _non_negative(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(w < 0 for w in v):
            raise ValueError("branch_weights must be a non-empty list of weights >= 0")
        return v


class SsanBranch(NamedTuple):
    """Features (and optionally ID logits) of one SSAN feature type for both modalities.

    ``visual``/``textual`` are ``(B, D)`` (global) or ``(B, K, D)`` (K parts; the CR loss sees
    them concatenated to ``(B, K*D)``). ``visual_logits``/``textual_logits`` are the shared
    classifier's ``(B, C)`` or per-part ``(B, K, C)`` scores, or None to skip the ID loss.
    """

    visual: torch.Tensor
    textual: torch.Tensor
    visual_logits: torch.Tensor | None = None
    textual_logits: torch.Tensor | None = None


@register_loss("ssan_compound_ranking", SsanCompoundRankingConfig)
def compound_ranking_loss(
    visual: torch.Tensor,
    textual: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha1: float = 0.2,
    beta: float = 0.1,
) -> torch.Tensor:
    """Compound ranking loss with adaptive weak-term margin (SSAN Eqs. 19-21), batch mean.

    For pair ``p`` (image ``I_p``, its description ``D_p``): ``D_n``/``I_n`` are the hardest
    other-identity text for ``I_p`` and image for ``D_p``. Strong terms:
    ``[a1 - S(I_p,D_p) + S(I_p,D_n)]_+ + [a1 - S(I_p,D_p) + S(I_n,D_p)]_+``. Weak terms use each
    description ``D_p'`` of another in-batch pair of the same identity:
    ``beta [a2 - S(I_p,D_p') + S(I_p,D_n)]_+ + beta [a2 - S(I_p,D_p') + S(I_n',D_p')]_+`` with
    ``I_n'`` the hardest negative image of ``D_p'``, ``a2 = (lambda + 1) a1 / 2`` and
    ``lambda = min(S(I_p,D_p') / S(I_p,D_p), 1)``, averaged over the ``D_p'`` available.

    Args:
        visual: ``(B, D)`` image features (for parts: the concatenated K part features).
        textual: ``(B, D)`` description features; row ``b`` describes image ``b``.
        labels: ``(B,)`` int64 identities.
        alpha1: SSAN's alpha_1 (0.2).
        beta: SSAN's beta (0.1).

    Returns:
        Scalar mean over the B pairs. A pair whose identity has no other sample in the batch has
        no weak terms; with no other identity in the batch there are no negatives and it adds 0.
        ``lambda`` is a margin, so it carries no gradient; it is clipped at 0 from below (a
        description with negative similarity gets the smallest margin ``a1 / 2``).
    """
    check_float("visual", visual, 2)
    check_float("textual", textual, 2)
    check_nonempty("visual", visual)
    check_same_shape("visual", visual, "textual", textual)
    b = visual.shape[0]
    check_labels("labels", labels, b)
    sim = F.normalize(visual, dim=1) @ F.normalize(textual, dim=1).t()  # [image, text]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(b, dtype=torch.bool, device=sim.device)
    neg_inf = torch.full_like(sim, -math.inf)
    negatives = torch.where(same, neg_inf, sim)
    hard_text = negatives.max(dim=1).values  # S(I_p, D_n) for each image p
    hard_image = negatives.max(dim=0).values  # S(I_n, D) for each description
    has_neg = torch.isfinite(hard_text)  # same identities on both sides, so one flag suffices
    # Replace -inf by a finite value so the hinges below stay finite; masked out afterwards.
    hard_text = torch.where(has_neg, hard_text, torch.zeros_like(hard_text))
    hard_image = torch.where(has_neg, hard_image, torch.zeros_like(hard_image))

    s_pp = sim.diagonal()
    strong = F.relu(alpha1 - s_pp + hard_text) + F.relu(alpha1 - s_pp + hard_image)

    weak_pairs = same & ~eye  # [p, j]: D_j describes another image of p's identity
    ratio = sim.detach() / s_pp.detach().clamp(min=_EPS)[:, None]
    lam = ratio.clamp(min=0.0, max=1.0)
    alpha2 = (lam + 1.0) * alpha1 / 2.0
    weak = F.relu(alpha2 - sim + hard_text[:, None]) + F.relu(alpha2 - sim + hard_image[None, :])
    weak = torch.where(weak_pairs, weak, torch.zeros_like(weak)).sum(dim=1)
    n_weak = weak_pairs.sum(dim=1).clamp(min=1).to(sim.dtype)
    per_pair = strong + beta * weak / n_weak
    per_pair = torch.where(has_neg, per_pair, torch.zeros_like(per_pair))
    return per_pair.mean()


def _flatten_parts(name: str, t: torch.Tensor) -> torch.Tensor:
    check_float(name, t, (2, 3))
    return t.reshape(t.shape[0], -1)


def _branch_identity_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    check_float("branch logits", logits, (2, 3))
    if logits.shape[0] != labels.shape[0]:
        raise InvalidInput(f"branch logits {tuple(logits.shape)} must have {labels.shape[0]} rows")
    check_labels("labels", labels, labels.shape[0], logits.shape[-1])
    if logits.dim() == 2:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    # One ID loss per part, averaged over the K parts (and the batch).
    k = logits.shape[1]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.repeat_interleave(k),
        label_smoothing=label_smoothing,
    )


@register_loss("ssan", SsanLossConfig)
def ssan_loss(
    branches: Sequence[SsanBranch],
    labels: torch.Tensor,
    *,
    alpha1: float = 0.2,
    beta: float = 0.1,
    branch_weights: Sequence[float] = (1.0, 0.5, 0.5),
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """SSAN objective: weighted CR + cross-modal ID losses of its feature types (SSAN Sec. IV).

    Args:
        branches: one :class:`SsanBranch` per feature type, in the order of ``branch_weights``
            (global, PFL parts, PRL parts).
        labels: ``(B,)`` int64 identities.
        alpha1: SSAN's alpha_1 (0.2).
        beta: SSAN's beta (0.1).
        branch_weights: weights of the branches (1, 0.5, 0.5).
        label_smoothing: ID-loss label smoothing (0).

    Returns:
        Scalar ``sum_b w_b (L_cr^b + L_id^b)``; ``L_id^b`` is the visual plus the textual CE
        (each averaged over the K parts for part features), omitted when logits are None.
    """
    if len(branches) != len(branch_weights):
        raise InvalidInput(
            f"got {len(branches)} feature branches but {len(branch_weights)} branch weights; "
            "pass one weight per branch (SSAN: global, PFL, PRL = 1, 0.5, 0.5)"
        )
    if not branches:
        raise InvalidInput("ssan_loss needs at least one feature branch")
    total: torch.Tensor | None = None
    for i, (br, w) in enumerate(zip(branches, branch_weights)):
        v = _flatten_parts(f"branches[{i}].visual", br.visual)
        t = _flatten_parts(f"branches[{i}].textual", br.textual)
        term = compound_ranking_loss(v, t, labels, alpha1=alpha1, beta=beta)
        if (br.visual_logits is None) != (br.textual_logits is None):
            raise InvalidInput(
                f"branches[{i}] has logits for one modality only; the ID loss needs both"
            )
        if br.visual_logits is not None and br.textual_logits is not None:
            term = term + _branch_identity_loss(br.visual_logits, labels, label_smoothing)
            term = term + _branch_identity_loss(br.textual_logits, labels, label_smoothing)
        total = w * term if total is None else total + w * term
    assert total is not None
    return total
