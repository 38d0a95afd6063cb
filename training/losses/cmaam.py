"""CMAAM (Aggarwal et al., "Text-based person search via attribute-aided matching", WACV 2020).

Two embedding spaces per modality. The attribute space (Eq. 10) is trained by a doubly balanced
multi-label attribute loss (Eq. 4) on cosine attribute scores (Eq. 3), Deep CORAL between image
and text score vectors (Eq. 5) and a semantic triplet loss whose negatives and margins come from
attribute similarity (Eqs. 6-9). The latent space (Eqs. 15-16) is trained by a hard-mined
cross-modal triplet loss (Eq. 11), an ID loss over a shared normalised classifier (Eq. 13) and
feature-norm regularisation (Eq. 14). Retrieval ranks by latent + attribute similarity (Eq. 19).

Attribute targets use the flat layout of :class:`pedsearch.attributes.AttributeSchema`; CMAAM
treats every entry as an independent binary attribute. Masks mark unknown entries (0), which
contribute nothing; attribute similarity between two samples is taken over the entries both
know (with full masks this is exactly the paper's ``S_cos(b_i, b_j)``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from pedsearch.errors import InvalidInput
from pedsearch.models.image import cosine_scores
from training.losses import (
    LossConfig,
    check_float,
    check_labels,
    check_mask,
    check_nonempty,
    check_same_shape,
    register_loss,
)
from training.losses.identity import cross_modal_identity_loss

# Attribute similarity of identical binary vectors is 1 up to rounding; CMAAM's candidate
# negatives are those with phi < 1.
_PHI_ONE = 1.0 - 1e-6

# -- configuration --------------------------------------------------------------------------------

_ALPHA = Field(
    2.0, gt=0.0, le=1000.0,
    description="CMAAM Eq. 4 alpha: weight of the mean negative loss relative to the positive "
    "loss, scaled by |P_i|; the paper uses 2 (Sec. 4.1, printed as 'Eq. 2')",
)
_GAMMA = Field(
    0.5, ge=0.0, lt=1.0,
    description="CMAAM Eq. 6 gamma: below this semantic similarity the margin stays m_max; 0.5",
)
_M_MAX = Field(0.3, ge=0.0, le=2.0, description="CMAAM Eq. 6 m_max, the largest margin; 0.3")
_DELTA = Field(0.3, ge=0.0, le=2.0, description="CMAAM Eq. 11 triplet margin Delta; 0.3")
_LAMBDA_B = Field(
    0.25, ge=0.0, le=1000.0, description="CMAAM Eq. 10 lambda_b, weight of L_MLC; 0.25"
)
_LAMBDA_C = Field(
    50.0, ge=0.0, le=1e6, description="CMAAM Eq. 10 lambda_c, weight of L_coral; 50"
)
_LAMBDA_REG = Field(
    1e-3, ge=0.0, le=100.0,
    description="CMAAM Eq. 14 lambda_reg, weight of the L2 norm of the feature norms; 1e-3",
)
_LAMBDA_VAR = Field(
    1.0, ge=0.0, le=1000.0,
    description="CMAAM Eq. 14 lambda_var, weight of the variance of the feature norms; 1",
)
_LAMBDA_T = Field(
    3.0, ge=0.0, le=1000.0, description="CMAAM Eq. 18 lambda_t, weight of the latent space; 3"
)
_NORMALIZE = Field(
    True, description="CMAAM Eq. 13 normalises the classifier columns (Table 5 'Norm'); True"
)
_REGULARIZE = Field(
    True,
    description="add L_norm-reg (Eq. 16, CMAAM); False gives Eq. 15 (alpha-CMAAM); True",
)


class CmaamMultilabelConfig(LossConfig):
    alpha: float = _ALPHA


class CmaamCoralConfig(LossConfig):
    """CMAAM Eq. 5 has no hyper-parameter of its own."""


class CmaamSemanticTripletConfig(LossConfig):
    gamma: float = _GAMMA
    m_max: float = _M_MAX


class CmaamLatentTripletConfig(LossConfig):
    delta: float = _DELTA


class CmaamNormRegConfig(LossConfig):
    lambda_reg: float = _LAMBDA_REG
    lambda_var: float = _LAMBDA_VAR


class CmaamAttributeSpaceConfig(LossConfig):
    alpha: float = _ALPHA
    gamma: float = _GAMMA
    m_max: float = _M_MAX
    lambda_b: float = _LAMBDA_B
    lambda_c: float = _LAMBDA_C


class CmaamLatentSpaceConfig(LossConfig):
    delta: float = _DELTA
    lambda_reg: float = _LAMBDA_REG
    lambda_var: float = _LAMBDA_VAR
    normalize_weight: bool = _NORMALIZE
    regularize: bool = _REGULARIZE


class CmaamLossConfig(LossConfig):
    alpha: float = _ALPHA
    gamma: float = _GAMMA
    m_max: float = _M_MAX
    delta: float = _DELTA
    lambda_b: float = _LAMBDA_B
    lambda_c: float = _LAMBDA_C
    lambda_reg: float = _LAMBDA_REG
    lambda_var: float = _LAMBDA_VAR
    lambda_t: float = _LAMBDA_T
    normalize_weight: bool = _NORMALIZE
    regularize: bool = _REGULARIZE


# -- helpers --------------------------------------------------------------------------------------


def _cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()


def _paired(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    check_float(name_a, a, 2)
    check_float(name_b, b, 2)
    check_nonempty(name_a, a)
    check_same_shape(name_a, a, name_b, b)


def attribute_frequency_weights(
    positive_ratio: torch.Tensor, *, sigma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frequency-balancing weights ``w^p = exp((1-r)/s^2)``, ``w^n = exp(r/s^2)`` (CMAAM Eq. 4).

    CMAAM takes the weights of its weighted BCE from DeepMAR (its ref. [9]) and only states that
    ``w^p`` is high for rare and ``w^n`` high for frequent attributes; this is DeepMAR's
    exponential form with its ``sigma = 1``.

    Args:
        positive_ratio: ``(V,)`` fraction of training samples on which each attribute is
            positive, in ``[0, 1]``.
        sigma: DeepMAR's sigma.

    Returns:
        ``(w_pos, w_neg)``, each ``(V,)``.
    """
    check_float("positive_ratio", positive_ratio, 1)
    if sigma <= 0:
        raise InvalidInput(f"sigma must be > 0, got {sigma}")
    if bool(((positive_ratio < 0) | (positive_ratio > 1)).any()):
        raise InvalidInput("positive_ratio must lie in [0, 1] (a fraction of samples)")
    s2 = sigma * sigma
    return torch.exp((1.0 - positive_ratio) / s2), torch.exp(positive_ratio / s2)


def cosine_attribute_scores(
    features: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Attribute scores ``S(l_j|x) = beta_j S_cos(a_x, W_j) + z_j`` (CMAAM Eq. 3).

    Args:
        features: ``(B, Da)`` attribute-space embeddings ``a_x``.
        weight: ``(V, Da)`` attribute classifier ``W``.
        scale: ``(V,)`` learnt scaling ``beta``.
        bias: ``(V,)`` biases ``z``.

    Returns:
        ``(B, V)`` scores ``v_x`` (logits of ``P(l_j|x)``; Eq. 5's CORAL activations).
    """
    check_float("features", features, 2)
    check_float("weight", weight, 2)
    check_float("scale", scale, 1)
    check_float("bias", bias, 1)
    if weight.shape[1] != features.shape[1] or scale.shape[0] != weight.shape[0] or (
        bias.shape[0] != weight.shape[0]
    ):
        raise InvalidInput(
            f"features {tuple(features.shape)}, weight {tuple(weight.shape)}, scale "
            f"{tuple(scale.shape)} and bias {tuple(bias.shape)} must be (B, Da), (V, Da), (V,) "
            "and (V,)"
        )
    return cosine_scores(features, weight, scale, bias)


# -- attribute space ------------------------------------------------------------------------------


@register_loss("cmaam_multilabel", CmaamMultilabelConfig)
def weighted_multilabel_loss(
    scores: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    neg_weight: torch.Tensor | None = None,
    *,
    alpha: float = 2.0,
) -> torch.Tensor:
    """Multi-label loss balanced by attribute frequency and by positives/negatives (CMAAM Eq. 4).

    Per sample: ``-sum_{P_i} w^p log P - alpha |P_i| / |N_i| sum_{N_i} w^n log(1 - P)``, with
    ``P = sigmoid(score)``; ``P_i``/``N_i`` are the known positive/negative attributes.

    Args:
        scores: ``(B, V)`` attribute scores ``S(l_j|x_i)`` (logits).
        targets: ``(B, V)`` 0/1 attribute indicators ``b_i``.
        mask: ``(B, V)`` 1 = known, 0 = unknown (contributes nothing).
        pos_weight: ``(V,)`` ``w^p`` (see :func:`attribute_frequency_weights`); ones if None.
        neg_weight: ``(V,)`` ``w^n``; ones if None.
        alpha: CMAAM's alpha (2).

    Returns:
        Scalar mean of ``L_MLC(x_i)`` over the samples with at least one known attribute (all
        ``n`` of them when fully annotated, as in Eq. 10's ``1/n sum_i``); 0 if none is known.
    """
    check_float("scores", scores, 2)
    check_float("targets", targets, 2)
    check_same_shape("scores", scores, "targets", targets)
    known = check_mask("mask", mask, tuple(scores.shape))
    v = scores.shape[1]
    ones = scores.new_ones(v)
    w_p = ones if pos_weight is None else check_float("pos_weight", pos_weight, 1)
    w_n = ones if neg_weight is None else check_float("neg_weight", neg_weight, 1)
    if w_p.shape[0] != v or w_n.shape[0] != v:
        raise InvalidInput(f"pos_weight and neg_weight must have {v} entries (one per attribute)")
    pos = known & (targets > 0.5)
    neg = known & ~(targets > 0.5)
    zero = torch.zeros_like(scores)
    pos_loss = torch.where(pos, -w_p * F.logsigmoid(scores), zero).sum(dim=1)
    neg_sum = torch.where(neg, -w_n * F.logsigmoid(-scores), zero).sum(dim=1)
    n_pos = pos.sum(dim=1).to(scores.dtype)
    n_neg = neg.sum(dim=1).to(scores.dtype)
    neg_loss = alpha * n_pos * neg_sum / n_neg.clamp(min=1.0)
    per_sample = pos_loss + neg_loss
    has_known = known.any(dim=1)
    return per_sample.sum() / has_known.sum().clamp(min=1).to(scores.dtype)


def _covariance(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.t() @ centred / (n - 1)


@register_loss("cmaam_coral", CmaamCoralConfig)
def coral_loss(image_scores: torch.Tensor, text_scores: torch.Tensor) -> torch.Tensor:
    """Deep CORAL between image and text attribute-score vectors (CMAAM Eq. 5).

    Args:
        image_scores: ``(n, V)`` score vectors ``v_I`` of the images.
        text_scores: ``(m, V)`` score vectors ``v_T`` of the texts.

    Returns:
        Scalar ``||C_I - C_T||_F^2 / (4 V^2)`` with unbiased covariances ``C``.
    """
    check_float("image_scores", image_scores, 2)
    check_float("text_scores", text_scores, 2)
    if image_scores.shape[1] != text_scores.shape[1]:
        raise InvalidInput(
            f"image_scores {tuple(image_scores.shape)} and text_scores "
            f"{tuple(text_scores.shape)} must have the same number of attributes"
        )
    if image_scores.shape[0] < 2 or text_scores.shape[0] < 2:
        raise InvalidInput(
            "CORAL compares covariances, which need at least 2 samples per modality; got "
            f"{image_scores.shape[0]} images and {text_scores.shape[0]} texts (use a larger "
            "batch or drop the last incomplete one)"
        )
    v = image_scores.shape[1]
    diff = _covariance(image_scores) - _covariance(text_scores)
    return (diff * diff).sum() / (4.0 * v * v)


def semantic_similarity(
    targets: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribute similarity ``phi(x_i, x_j) = S_cos(b_i, b_j)`` of every pair (CMAAM Sec. 3.2.1).

    With masks, each pair is compared on the attributes both samples know. Two samples whose
    common known attributes are all 0 agree on everything known (``phi = 1``); one all-0 and one
    not gives ``phi = 0``.

    Args:
        targets: ``(B, A)`` 0/1 attribute vectors ``b``.
        mask: optional ``(B, A)`` 1 = known.

    Returns:
        ``(phi, comparable)``: ``(B, B)`` similarities in ``[0, 1]`` and a ``(B, B)`` bool that
        is True where the pair shares at least one known attribute.
    """
    check_float("targets", targets, 2)
    b = targets.detach()
    m = (
        torch.ones_like(b)
        if mask is None
        else check_mask("mask", mask, tuple(b.shape)).to(b.dtype)
    )
    bm = b * m
    dot = bm @ bm.t()
    sq_i = (b * b * m) @ m.t()  # |b_i|^2 over the attributes j also knows
    sq_j = sq_i.t()
    comparable = (m @ m.t()) > 0
    denom = torch.sqrt(sq_i * sq_j)
    phi = torch.where(denom > 0, dot / denom.clamp(min=1e-12), torch.zeros_like(dot))
    both_zero = (sq_i == 0) & (sq_j == 0)
    phi = torch.where(both_zero, torch.ones_like(phi), phi)
    return phi.clamp(0.0, 1.0), comparable


def semantic_margin(phi: torch.Tensor, *, gamma: float = 0.5, m_max: float = 0.3) -> torch.Tensor:
    """Adaptive margin ``m_max`` if ``phi <= gamma`` else ``m_max (1 - phi) / (1 - gamma)`` (Eq. 6).

    Args:
        phi: any shape, semantic similarities in ``[0, 1]``.
        gamma: CMAAM's gamma (0.5).
        m_max: CMAAM's m_max (0.3).

    Returns:
        Margins, same shape as ``phi``.
    """
    if not 0.0 <= gamma < 1.0:
        raise InvalidInput(f"gamma must lie in [0, 1), got {gamma}")
    return torch.where(phi <= gamma, torch.full_like(phi, m_max), m_max * (1.0 - phi) / (1 - gamma))


@register_loss("cmaam_semantic_triplet", CmaamSemanticTripletConfig)
def semantic_triplet_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    attr_targets: torch.Tensor,
    attr_mask: torch.Tensor | None = None,
    *,
    gamma: float = 0.5,
    m_max: float = 0.3,
) -> torch.Tensor:
    """Semantic triplet loss with attribute-mined negatives and adaptive margin (CMAAM Eqs. 6-9).

    For each anchor the positive is its paired sample of the other modality; candidate
    negatives are the other-modality samples with ``phi < 1``; the negative is the candidate
    maximising ``S_a + m`` (Eq. 7), and the loss is ``[m + S_a(neg) - S_a(pos)]_+``, summed over
    image anchors and text anchors (Eq. 9).

    Args:
        image_features: ``(B, Da)`` attribute-space image embeddings ``a_I``.
        text_features: ``(B, Da)`` attribute-space text embeddings ``a_T``; row ``k`` pairs with
            image ``k``.
        attr_targets: ``(B, A)`` 0/1 attribute vectors ``b_k`` of the pairs.
        attr_mask: optional ``(B, A)`` 1 = known. A pair is a candidate negative only if the two
            share a known attribute.
        gamma: CMAAM's gamma (0.5).
        m_max: CMAAM's m_max (0.3).

    Returns:
        Scalar sum over the ``2B`` anchors; anchors without candidate negatives add 0.
    """
    _paired("image_features", image_features, "text_features", text_features)
    b = image_features.shape[0]
    check_float("attr_targets", attr_targets, 2)
    if attr_targets.shape[0] != b:
        raise InvalidInput(f"attr_targets {tuple(attr_targets.shape)} must have {b} rows")
    phi, comparable = semantic_similarity(attr_targets, attr_mask)
    eye = torch.eye(b, dtype=torch.bool, device=phi.device)
    candidate = comparable & (phi < _PHI_ONE) & ~eye
    margin = semantic_margin(phi, gamma=gamma, m_max=m_max)
    sim = _cosine_matrix(image_features, text_features)  # [i, k] = S_a(I_i, T_k)
    pos = sim.diagonal()
    neg_inf = torch.full_like(sim, -math.inf)
    scored = torch.where(candidate, sim + margin, neg_inf)
    # phi is symmetric, so the candidate set and margins of image anchor k (row k, over texts)
    # and of text anchor k (column k, over images) come from the same matrix.
    hardest_for_image = scored.max(dim=1).values
    hardest_for_text = scored.max(dim=0).values
    zero = torch.zeros_like(pos)
    loss_img = torch.where(torch.isfinite(hardest_for_image), F.relu(hardest_for_image - pos), zero)
    loss_txt = torch.where(torch.isfinite(hardest_for_text), F.relu(hardest_for_text - pos), zero)
    return loss_img.sum() + loss_txt.sum()


@register_loss("cmaam_attribute_space", CmaamAttributeSpaceConfig)
def attribute_space_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_scores: torch.Tensor,
    text_scores: torch.Tensor,
    attr_targets: torch.Tensor,
    attr_mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    neg_weight: torch.Tensor | None = None,
    *,
    alpha: float = 2.0,
    gamma: float = 0.5,
    m_max: float = 0.3,
    lambda_b: float = 0.25,
    lambda_c: float = 50.0,
) -> torch.Tensor:
    """Attribute-space loss ``L_sTrip + lambda_c L_coral + lambda_b/n sum (L_MLC)`` (CMAAM Eq. 10).

    Args:
        image_features: ``(n, Da)`` attribute-space image embeddings.
        text_features: ``(n, Da)`` attribute-space text embeddings, paired with the images.
        image_scores: ``(n, V)`` attribute scores of the images (Eq. 3).
        text_scores: ``(n, V)`` attribute scores of the texts.
        attr_targets: ``(n, V)`` 0/1 attributes of each pair (V = A, the flat schema).
        attr_mask: ``(n, V)`` 1 = known.
        pos_weight: optional ``(V,)`` ``w^p``.
        neg_weight: optional ``(V,)`` ``w^n``.
        alpha, gamma, m_max, lambda_b, lambda_c: CMAAM's values (2, 0.5, 0.3, 0.25, 50).

    Returns:
        Scalar ``L_attr``.
    """
    l_trip = semantic_triplet_loss(
        image_features, text_features, attr_targets, attr_mask, gamma=gamma, m_max=m_max
    )
    l_coral = coral_loss(image_scores, text_scores)
    l_mlc = weighted_multilabel_loss(
        image_scores, attr_targets, attr_mask, pos_weight, neg_weight, alpha=alpha
    ) + weighted_multilabel_loss(
        text_scores, attr_targets, attr_mask, pos_weight, neg_weight, alpha=alpha
    )
    return l_trip + lambda_c * l_coral + lambda_b * l_mlc


# -- latent space ---------------------------------------------------------------------------------


@register_loss("cmaam_latent_triplet", CmaamLatentTripletConfig)
def latent_triplet_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    *,
    delta: float = 0.3,
) -> torch.Tensor:
    """Cross-modal triplet loss with hardest positive and negative by class (CMAAM Eqs. 11-12).

    Args:
        image_features: ``(B, Dc)`` latent image embeddings ``c_I``.
        text_features: ``(B, Dc)`` latent text embeddings ``c_T``, paired with the images.
        labels: ``(B,)`` int64 class of each pair.
        delta: the margin Delta (0.3).

    Returns:
        Scalar sum over the ``2B`` anchors of ``[Delta + S_l(hard neg) - S_l(hard pos)]_+``;
        the hardest positive of a one-sample identity is its own pair; anchors without any
        other-class sample add 0.
    """
    _paired("image_features", image_features, "text_features", text_features)
    check_labels("labels", labels, image_features.shape[0])
    sim = _cosine_matrix(image_features, text_features)
    same = labels[:, None] == labels[None, :]
    pos_inf = torch.full_like(sim, math.inf)
    neg_inf = torch.full_like(sim, -math.inf)
    hard_pos_sim = torch.where(same, sim, pos_inf)
    hard_neg_sim = torch.where(same, neg_inf, sim)
    zero = sim.new_zeros(sim.shape[0])
    total = sim.new_zeros(())
    for dim in (1, 0):  # image anchors over texts (rows), then text anchors over images
        hp = hard_pos_sim.min(dim=dim).values
        hn = hard_neg_sim.max(dim=dim).values
        hinge = F.relu(delta + hn - hp)
        total = total + torch.where(torch.isfinite(hn), hinge, zero).sum()
    return total


@register_loss("cmaam_norm_regularization", CmaamNormRegConfig)
def feature_norm_regularization(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    lambda_reg: float = 1e-3,
    lambda_var: float = 1.0,
) -> torch.Tensor:
    """Feature-norm regularisation ``lambda_reg ||v_norm||_2 + lambda_var sigma^2`` (CMAAM Eq. 14).

    Args:
        image_features: ``(n, Dc)`` latent image embeddings.
        text_features: ``(m, Dc)`` latent text embeddings.
        lambda_reg: CMAAM's lambda_reg (1e-3).
        lambda_var: CMAAM's lambda_var (1).

    Returns:
        Scalar; ``v_norm`` holds the ``n + m`` feature norms and ``sigma^2`` is their population
        variance (mean squared deviation).
    """
    check_float("image_features", image_features, 2)
    check_float("text_features", text_features, 2)
    if image_features.shape[1] != text_features.shape[1]:
        raise InvalidInput("image_features and text_features must have the same dimension")
    norms = torch.cat([image_features.norm(dim=1), text_features.norm(dim=1)])
    if norms.numel() == 0:
        raise InvalidInput("feature_norm_regularization got an empty batch")
    return lambda_reg * norms.norm() + lambda_var * norms.var(unbiased=False)


@register_loss("cmaam_latent_space", CmaamLatentSpaceConfig)
def latent_space_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    class_weight: torch.Tensor,
    *,
    delta: float = 0.3,
    lambda_reg: float = 1e-3,
    lambda_var: float = 1.0,
    normalize_weight: bool = True,
    regularize: bool = True,
) -> torch.Tensor:
    """Latent-space loss ``L_trip + 1/n sum (L_class(I) + L_class(T)) [+ L_norm-reg]`` (Eq. 15/16).

    Args:
        image_features: ``(n, Dc)`` latent image embeddings ``c_I``.
        text_features: ``(n, Dc)`` latent text embeddings ``c_T``, paired.
        labels: ``(n,)`` int64 identity of each pair, in ``[0, C)``.
        class_weight: ``(C, Dc)`` shared identity classifier (rows are CMAAM's columns ``W_k``;
            no bias, Eq. 13).
        delta: triplet margin (0.3).
        lambda_reg, lambda_var: Eq. 14 weights (1e-3, 1).
        normalize_weight: normalise the classifier (Eq. 13; True).
        regularize: add ``L_norm-reg`` (Eq. 16, CMAAM) rather than stop at Eq. 15 (alpha-CMAAM).

    Returns:
        Scalar ``L_reg-latent`` (or ``L_latent``).
    """
    loss = latent_triplet_loss(image_features, text_features, labels, delta=delta)
    loss = loss + cross_modal_identity_loss(
        image_features, text_features, labels, class_weight, normalize_weight=normalize_weight
    )
    if regularize:
        loss = loss + feature_norm_regularization(
            image_features, text_features, lambda_reg=lambda_reg, lambda_var=lambda_var
        )
    return loss


@register_loss("cmaam", CmaamLossConfig)
def cmaam_loss(
    image_attr_features: torch.Tensor,
    text_attr_features: torch.Tensor,
    image_scores: torch.Tensor,
    text_scores: torch.Tensor,
    attr_targets: torch.Tensor,
    attr_mask: torch.Tensor,
    image_latent: torch.Tensor,
    text_latent: torch.Tensor,
    labels: torch.Tensor,
    class_weight: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    neg_weight: torch.Tensor | None = None,
    *,
    alpha: float = 2.0,
    gamma: float = 0.5,
    m_max: float = 0.3,
    delta: float = 0.3,
    lambda_b: float = 0.25,
    lambda_c: float = 50.0,
    lambda_reg: float = 1e-3,
    lambda_var: float = 1.0,
    lambda_t: float = 3.0,
    normalize_weight: bool = True,
    regularize: bool = True,
) -> torch.Tensor:
    """Total CMAAM objective ``L_attr + lambda_t L_reg-latent`` (CMAAM Eq. 18, or Eq. 17).

    Args:
        image_attr_features: ``(n, Da)`` attribute-space image embeddings.
        text_attr_features: ``(n, Da)`` attribute-space text embeddings, paired.
        image_scores: ``(n, V)`` image attribute scores (Eq. 3).
        text_scores: ``(n, V)`` text attribute scores.
        attr_targets: ``(n, V)`` 0/1 attributes of each pair.
        attr_mask: ``(n, V)`` 1 = known.
        image_latent: ``(n, Dc)`` latent image embeddings.
        text_latent: ``(n, Dc)`` latent text embeddings.
        labels: ``(n,)`` int64 identities in ``[0, C)``.
        class_weight: ``(C, Dc)`` shared identity classifier.
        pos_weight: optional ``(V,)`` ``w^p``.
        neg_weight: optional ``(V,)`` ``w^n``.
        alpha, gamma, m_max, delta, lambda_b, lambda_c, lambda_reg, lambda_var, lambda_t:
            CMAAM's values (2, 0.5, 0.3, 0.3, 0.25, 50, 1e-3, 1, 3).
        normalize_weight: normalise the classifier (True).
        regularize: CMAAM (True) or alpha-CMAAM (False).

    Returns:
        Scalar total loss.
    """
    l_attr = attribute_space_loss(
        image_attr_features, text_attr_features, image_scores, text_scores, attr_targets,
        attr_mask, pos_weight, neg_weight,
        alpha=alpha, gamma=gamma, m_max=m_max, lambda_b=lambda_b, lambda_c=lambda_c,
    )
    l_latent = latent_space_loss(
        image_latent, text_latent, labels, class_weight,
        delta=delta, lambda_reg=lambda_reg, lambda_var=lambda_var,
        normalize_weight=normalize_weight, regularize=regularize,
    )
    return l_attr + lambda_t * l_latent


# -- retrieval ------------------------------------------------------------------------------------


def latent_attribute_similarity(
    image_attr_features: torch.Tensor,
    text_attr_features: torch.Tensor,
    image_latent: torch.Tensor,
    text_latent: torch.Tensor,
) -> torch.Tensor:
    """Retrieval score ``S_la = S_a(a_I, a_T) + S_l(c_I, c_T)`` of every pair (CMAAM Eq. 19).

    Args:
        image_attr_features: ``(Ni, Da)`` attribute-space embeddings of the gallery images.
        text_attr_features: ``(Nt, Da)`` attribute-space embeddings of the queries.
        image_latent: ``(Ni, Dc)`` latent embeddings of the images.
        text_latent: ``(Nt, Dc)`` latent embeddings of the queries.

    Returns:
        ``(Ni, Nt)`` scores in ``[-2, 2]``; higher is more similar.
    """
    for name, t in (
        ("image_attr_features", image_attr_features),
        ("text_attr_features", text_attr_features),
        ("image_latent", image_latent),
        ("text_latent", text_latent),
    ):
        check_float(name, t, 2)
    if image_attr_features.shape[0] != image_latent.shape[0]:
        raise InvalidInput("image_attr_features and image_latent must have one row per image")
    if text_attr_features.shape[0] != text_latent.shape[0]:
        raise InvalidInput("text_attr_features and text_latent must have one row per text")
    if image_attr_features.shape[1] != text_attr_features.shape[1] or (
        image_latent.shape[1] != text_latent.shape[1]
    ):
        raise InvalidInput("image and text embeddings of one space must have the same dimension")
    return _cosine_matrix(image_attr_features, text_attr_features) + _cosine_matrix(
        image_latent, text_latent
    )
