"""AAIPR (Yin et al., "Adversarial attribute-image person re-identification", IJCAI 2018).

An attribute-to-concept generator ``Phi_A`` is trained to fool a concept discriminator ``D``
that tells image concepts ``Phi_I(I)`` from generated ones (Eqs. 4-5), while one semantic-ID
classifier ``Psi_I`` is shared by image concepts (Eq. 3) and generated concepts (Eq. 6) so the
two stay aligned per semantic ID. The paper has no other alignment term: the adversarial loss
aligns the distributions and the shared classifier aligns them per semantic ID; retrieval ranks
by cosine distance between concepts.

The two players are optimised in turns: the discriminator step minimises
:func:`discriminator_objective` on detached concepts; the generator/image step minimises
:func:`generator_objective`.

Discriminator outputs are taken as logits: the paper's ``D`` ends in a sigmoid, so
``D(c) = sigmoid(logit)`` and ``log D`` is computed as ``logsigmoid(logit)``, which stays finite
where a saturated probability would give ``log 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pedsearch.errors import InvalidInput
from training.losses import LossConfig, check_float, check_nonempty, register_loss
from training.losses.identity import (
    cross_modal_identity_loss,
    identity_loss,
    shared_classifier_logits,
)


class AaiprGeneratorConfig(LossConfig):
    lambda_g: float = Field(
        0.001, ge=0.0, le=100.0,
        description="AAIPR Eq. 5 weight lambda_G of the generator's adversarial loss; the paper "
        "sets 0.001 (Sec. 3.3, Fig. 3)",
    )
    semantic_consistency: bool = Field(
        True,
        description="AAIPR Eq. 6 l_sc: classify generated concepts with the image's semantic-ID "
        "classifier; False is the paper's 'w/o semantic consistency' ablation (the generator "
        "then learns from the adversarial loss alone)",
    )


class AaiprDiscriminatorConfig(LossConfig):
    lambda_d: float = Field(
        0.5, ge=0.0, le=100.0,
        description="AAIPR Eq. 5 weight lambda_D of the discriminator's loss; the paper sets "
        "0.5 (Sec. 3.3, Fig. 3)",
    )


def _logits_1d(name: str, t: torch.Tensor) -> torch.Tensor:
    check_float(name, t, (1, 2))
    if t.dim() == 2:
        if t.shape[1] != 1:
            raise InvalidInput(f"{name} must be (B,) or (B, 1) discriminator logits, got "
                               f"{tuple(t.shape)}")
        t = t[:, 0]
    check_nonempty(name, t)
    return t


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss ``-E log D(Phi_I(I)) - E log(1 - D(Phi_A(A)))`` (AAIPR Eq. 5).

    Args:
        real_logits: ``(B,)`` or ``(B, 1)`` discriminator logits of image concepts.
        fake_logits: ``(B',)`` or ``(B', 1)`` discriminator logits of generated concepts.

    Returns:
        Scalar ``l_adv^D``; ``2 log 2`` when D answers 1/2 everywhere.
    """
    real = _logits_1d("real_logits", real_logits)
    fake = _logits_1d("fake_logits", fake_logits)
    # log(1 - sigmoid(x)) = logsigmoid(-x)
    return -F.logsigmoid(real).mean() - F.logsigmoid(-fake).mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss ``-E log D(Phi_A(A))`` (AAIPR Eq. 5, ``l_adv^G``).

    Args:
        fake_logits: ``(B,)`` or ``(B, 1)`` discriminator logits of generated concepts, with the
            gradient flowing back into the generator.

    Returns:
        Scalar ``l_adv^G``; ``log 2`` when D answers 1/2.
    """
    fake = _logits_1d("fake_logits", fake_logits)
    return -F.logsigmoid(fake).mean()


def image_concept_loss(
    image_concepts: torch.Tensor,
    semantic_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Semantic-ID softmax loss on image concepts, ``l_I`` (AAIPR Eq. 3), batch mean.

    Args:
        image_concepts: ``(B, D)`` image concepts ``Phi_I(I)``.
        semantic_ids: ``(B,)`` int64 semantic ID (index of the attribute description).
        weight: ``(S, D)`` semantic-ID classifier ``Psi_I`` weight.
        bias: optional ``(S,)`` bias.

    Returns:
        Scalar mean of ``-log Psi_I(Phi_I(I_i))_{y_i}``.
    """
    return identity_loss(shared_classifier_logits(image_concepts, weight, bias), semantic_ids)


def semantic_consistency_loss(
    attribute_concepts: torch.Tensor,
    semantic_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Semantic consistency: the image classifier ``Psi_I`` on generated concepts (AAIPR Eq. 6).

    Args:
        attribute_concepts: ``(B, D)`` generated concepts ``Phi_A(A)``.
        semantic_ids: ``(B,)`` int64 semantic ID of each attribute description.
        weight: ``(S, D)`` the same classifier weight as :func:`image_concept_loss` uses.
        bias: optional ``(S,)`` bias.

    Returns:
        Scalar mean of ``-log Psi_I(Phi_A(A_i))_{y_i}``.
    """
    return identity_loss(shared_classifier_logits(attribute_concepts, weight, bias), semantic_ids)


@register_loss("aaipr_generator", AaiprGeneratorConfig)
def generator_objective(
    image_concepts: torch.Tensor,
    attribute_concepts: torch.Tensor,
    semantic_ids: torch.Tensor,
    fake_logits: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    lambda_g: float = 0.001,
    semantic_consistency: bool = True,
) -> torch.Tensor:
    """Image + generator objective ``l_I + l_sc + lambda_G l_adv^G`` (AAIPR Eqs. 2, 5, 7).

    Args:
        image_concepts: ``(B, D)`` image concepts ``Phi_I(I_i)``.
        attribute_concepts: ``(B, D)`` concepts ``Phi_A(A_i)`` generated from the paired
            attribute descriptions.
        semantic_ids: ``(B,)`` int64 semantic ID shared by the pair.
        fake_logits: ``(B,)`` or ``(B, 1)`` discriminator logits of ``attribute_concepts``.
        weight: ``(S, D)`` shared semantic-ID classifier weight.
        bias: optional ``(S,)`` bias.
        lambda_g: AAIPR's lambda_G (0.001).
        semantic_consistency: include ``l_sc`` (Eq. 6); False drops it (``l_I + lambda_G
            l_adv^G``, the paper's "w/o sc" ablation).

    Returns:
        Scalar objective of the generator/image step.
    """
    if semantic_consistency:
        shared = cross_modal_identity_loss(
            image_concepts, attribute_concepts, semantic_ids, weight, bias
        )
    else:
        check_float("attribute_concepts", attribute_concepts, 2)
        shared = image_concept_loss(image_concepts, semantic_ids, weight, bias)
    return shared + lambda_g * generator_adversarial_loss(fake_logits)


@register_loss("aaipr_discriminator", AaiprDiscriminatorConfig)
def discriminator_objective(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, *, lambda_d: float = 0.5
) -> torch.Tensor:
    """Weighted discriminator objective ``lambda_D l_adv^D`` (AAIPR Eq. 5).

    Args:
        real_logits: ``(B,)`` or ``(B, 1)`` logits of detached image concepts.
        fake_logits: ``(B',)`` or ``(B', 1)`` logits of detached generated concepts.
        lambda_d: AAIPR's lambda_D (0.5).

    Returns:
        Scalar objective of the discriminator step.
    """
    return lambda_d * discriminator_loss(real_logits, fake_logits)


def semantic_ids_from_attributes(
    targets: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantic IDs: samples with the same attribute description share one ID (AAIPR Sec. 3).

    Args:
        targets: ``(N, A)`` attribute targets on the flat schema layout.
        mask: optional ``(N, A)`` known-mask; unknown entries are set to -1 before grouping, so
            an unknown value is its own "description" and never equals a known 0 or 1.

    Returns:
        ``(ids, descriptions)``: ``(N,)`` int64 semantic IDs in ``[0, S)`` and the ``(S, A)``
        distinct descriptions in ID order (sorted lexicographically, so deterministic).
    """
    check_float("targets", targets, 2)
    desc = targets.detach()
    if mask is not None:
        if mask.shape != targets.shape:
            raise InvalidInput(f"mask {tuple(mask.shape)} must match targets "
                               f"{tuple(targets.shape)}")
        desc = torch.where(mask != 0, desc, torch.full_like(desc, -1.0))
    table, ids = torch.unique(desc, dim=0, return_inverse=True)
    return ids, table
