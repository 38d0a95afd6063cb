"""Identity (classification) losses: the ID loss of APR and the cross-modal ID loss with one
classifier shared by both modalities (SSAN/ViTAA after Zheng et al.'s instance loss, CMAAM's
normalised shared classifier, AAIPR's semantic-ID classifier over image and attribute concepts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pedsearch.errors import InvalidInput
from training.losses import (
    LossConfig,
    check_float,
    check_labels,
    check_nonempty,
    register_loss,
)


class IdentityLossConfig(LossConfig):
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="label smoothing epsilon; APR Eq. 1 uses a one-hot q (0.0)",
    )


class CrossModalIdentityLossConfig(LossConfig):
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="label smoothing epsilon; none of SSAN, ViTAA, CMAAM or AAIPR smooths (0.0)",
    )
    normalize_weight: bool = Field(
        False,
        description="L2-normalise each class's weight vector before scoring; CMAAM Eq. 13 does "
        "(set True for CMAAM), SSAN/ViTAA/AAIPR use a plain linear classifier (False)",
    )


@register_loss("identity", IdentityLossConfig)
def identity_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Softmax cross-entropy over identities, averaged over the batch (APR Eq. 1).

    Args:
        logits: ``(B, C)`` classifier scores ``z`` (before softmax).
        labels: ``(B,)`` int64 identity (or semantic-ID) indices in ``[0, C)``.
        label_smoothing: epsilon of label smoothing; 0 gives APR's one-hot ``q``.

    Returns:
        Scalar ``mean_b -sum_k q_b(k) log p_b(k)``.
    """
    check_float("logits", logits, 2)
    check_nonempty("logits", logits)
    check_labels("labels", labels, logits.shape[0], logits.shape[1])
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def shared_classifier_logits(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    normalize_weight: bool = False,
) -> torch.Tensor:
    """Class scores of one shared linear classifier (CMAAM Eq. 13 when ``normalize_weight``).

    Args:
        features: ``(B, D)`` features of either modality.
        weight: ``(C, D)`` classifier weight (``nn.Linear.weight`` layout: one row per class).
        bias: optional ``(C,)`` bias.
        normalize_weight: score against ``W_k / ||W_k||`` as CMAAM does.

    Returns:
        ``(B, C)`` logits.
    """
    check_float("features", features, 2)
    check_float("weight", weight, 2)
    if weight.shape[1] != features.shape[1]:
        raise InvalidInput(
            f"classifier weight {tuple(weight.shape)} expects {weight.shape[1]}-d features, "
            f"got features {tuple(features.shape)}"
        )
    if bias is not None:
        check_float("bias", bias, 1)
        if bias.shape[0] != weight.shape[0]:
            raise InvalidInput(f"bias {tuple(bias.shape)} must have {weight.shape[0]} entries")
    w = F.normalize(weight, dim=1) if normalize_weight else weight
    return F.linear(features, w, bias)


@register_loss("cross_modal_identity", CrossModalIdentityLossConfig)
def cross_modal_identity_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    label_smoothing: float = 0.0,
    normalize_weight: bool = False,
) -> torch.Tensor:
    """Cross-modal ID loss with one classifier shared by both modalities (CMAAM Eq. 13/15).

    Both modalities are classified by the same ``(weight, bias)``, which pulls them into one
    space (SSAN and ViTAA's ID loss after Zheng et al.'s instance loss; CMAAM's
    ``1/n sum_i L_class(I_i) + L_class(T_i)``; AAIPR's ``l_I + l_sc`` over image and attribute
    concepts with the semantic-ID classifier). The text side may be an attribute concept.

    Args:
        image_features: ``(B, D)`` image features.
        text_features: ``(B, D)`` text (or attribute-concept) features; row ``b`` is paired
            with image ``b`` and shares its label.
        labels: ``(B,)`` int64 class (identity or semantic ID) of each pair, in ``[0, C)``.
        weight: ``(C, D)`` shared classifier weight.
        bias: optional ``(C,)`` shared bias.
        label_smoothing: label smoothing epsilon (0 in all four papers).
        normalize_weight: L2-normalise class weights (CMAAM).

    Returns:
        Scalar: mean CE of the images plus mean CE of the texts.
    """
    check_float("image_features", image_features, 2)
    check_float("text_features", text_features, 2)
    check_nonempty("image_features", image_features)
    if text_features.shape != image_features.shape:
        raise InvalidInput(
            f"image_features {tuple(image_features.shape)} and text_features "
            f"{tuple(text_features.shape)} must be paired: same batch size and dimension"
        )
    check_labels("labels", labels, image_features.shape[0], weight.shape[0])
    img = shared_classifier_logits(image_features, weight, bias, normalize_weight=normalize_weight)
    txt = shared_classifier_logits(text_features, weight, bias, normalize_weight=normalize_weight)
    return F.cross_entropy(img, labels, label_smoothing=label_smoothing) + F.cross_entropy(
        txt, labels, label_smoothing=label_smoothing
    )
