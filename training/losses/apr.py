"""APR (Lin et al., "Improving person re-identification by attribute and identity learning"):
one CNN, an ID loss (Eq. 1) and M attribute losses (Eq. 2), combined as Eq. 3.

APR's M attributes are softmax classifiers, one per attribute; its colour attributes are
binary ones. On the flat layout of :class:`pedsearch.attributes.AttributeSchema` that is one
softmax cross-entropy per ``single`` family and one binary cross-entropy (a two-way softmax
written as a sigmoid) per value of a ``multi`` family, so ``M = #single + #multi values``.
"""

from __future__ import annotations

from typing import Literal, Sequence, Union

import torch
import torch.nn.functional as F
from pydantic import Field

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from training.losses import LossConfig, check_float, check_mask, check_same_shape, register_loss
from training.losses.identity import identity_loss

GroupKind = Literal["single", "multi"]
#: Attribute grouping: the schema itself, or ``(slice, kind)`` pairs over the flat vector.
AttributeGroups = Union[AttributeSchema, Sequence[tuple[slice, GroupKind]]]


#: positive rates are clipped to this range before they become weights (a value seen 3 times in
#: 10,000 images would otherwise weigh thousands of times more than its negatives)
_PRIOR_CLIP = (0.02, 0.98)

Balance = Literal["none", "inverse_frequency"]
_BALANCE = Field(
    "none",
    description="'none': APR Eq. 2 as printed (plain cross-entropy). 'inverse_frequency': each "
    "known value's term is weighted by the inverse of its training frequency (softmax family "
    "with K values: 1 / (K p_c) for target class c; binary value: 1 / (2p) if present, "
    "1 / (2(1-p)) if absent), so rare values count as much as common ones. mA is the mean of "
    "per-attribute balanced accuracies, which plain cross-entropy does not optimise: on "
    "imbalanced labels (few PETA people wear hats) it learns to predict the majority and mA "
    "stays at 0.5",
)


class AprAttributeLossConfig(LossConfig):
    """APR Eq. 2 has no hyper-parameter of its own; ``balance`` is pedsearch's (see the
    field)."""

    balance: Balance = _BALANCE


class AprLossConfig(LossConfig):
    lambda_id: float = Field(
        8.0, ge=0.0, le=1000.0,
        description="APR Eq. 3 weight of the ID loss against the mean attribute loss; the APR "
        "paper validates lambda = 8 on Market-1501 (Fig. 7) and uses it on both datasets",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="label smoothing of the ID loss; APR uses none (0.0)"
    )


def attribute_groups(groups: AttributeGroups, dim: int) -> list[tuple[slice, GroupKind]]:
    """Normalise a schema or ``(slice, kind)`` list into checked ``(slice, kind)`` pairs.

    Args:
        groups: an :class:`AttributeSchema` or ``(slice, "single"|"multi")`` pairs.
        dim: length of the flat attribute vector the slices index.

    Returns:
        ``(slice, kind)`` pairs with integer bounds inside ``[0, dim]``.
    """
    if isinstance(groups, AttributeSchema):
        if groups.dim != dim:
            raise InvalidInput(
                f"attribute tensors have {dim} columns but the schema's flat vector has "
                f"{groups.dim}; encode targets with the same schema"
            )
        return [(f.slice, f.kind) for f in groups.families]
    out: list[tuple[slice, GroupKind]] = []
    for g in groups:
        try:
            sl, kind = g
        except (TypeError, ValueError):
            raise InvalidInput(f"attribute group {g!r} must be a (slice, kind) pair") from None
        if not isinstance(sl, slice) or kind not in ("single", "multi"):
            raise InvalidInput(f"attribute group {g!r} must be (slice, 'single' | 'multi')")
        start, stop, step = sl.indices(dim)
        if step != 1 or stop - start < 1 or (sl.stop is not None and sl.stop > dim):
            raise InvalidInput(
                f"attribute group {sl} must be a contiguous non-empty slice inside [0, {dim})"
            )
        if kind == "single" and stop - start < 2:
            raise InvalidInput(f"single (softmax) group {sl} needs at least two values")
        out.append((slice(start, stop), kind))
    return out


def balance_weights(prior: torch.Tensor, groups: list[tuple[slice, GroupKind]]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-frequency weights of every value: ``(pos (A,), neg (A,))``.

    ``prior`` ``(A,)`` is each value's share of the training images where it is known (clipped
    to ``[0.02, 0.98]``). A ``single`` family of ``K`` values weighs a sample whose target is
    ``c`` by ``pos[c] = 1 / (K p_c)`` (``neg`` unused); a binary value is weighted
    ``pos = 1 / (2p)`` when present and ``neg = 1 / (2(1-p))`` when absent. Both give weight 1
    everywhere for a balanced prior and an expected weight of 1 under the prior.
    """
    p = prior.clamp(*_PRIOR_CLIP)
    pos = torch.empty_like(p)
    neg = torch.empty_like(p)
    for sl, kind in groups:
        if kind == "single":
            q = p[sl] / p[sl].sum()  # the clipped shares of one family sum to 1 again
            pos[sl] = 1.0 / (q.numel() * q)
            neg[sl] = 1.0
        else:
            pos[sl] = 0.5 / p[sl]
            neg[sl] = 0.5 / (1.0 - p[sl])
    return pos, neg


def _per_attribute_terms(
    logits: torch.Tensor,
    targets: torch.Tensor,
    known: torch.Tensor,
    groups: list[tuple[slice, GroupKind]],
    weights: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample sum of the known attribute losses and the count of known attributes."""
    total = logits.new_zeros(logits.shape[0])
    count = logits.new_zeros(logits.shape[0])
    for sl, kind in groups:
        z, q, k = logits[:, sl], targets[:, sl], known[:, sl]
        if kind == "single":
            fam_known = k.all(dim=1)
            if bool((k.any(dim=1) & ~fam_known).any()):
                raise InvalidInput(
                    f"the mask of softmax group {sl.start}:{sl.stop} is partly set in some row; "
                    "a single-valued family is known or unknown as a whole (see "
                    "AttributeSchema.encode)"
                )
            # APR Eq. 2: -sum_j q(j) log p(j); q may be one-hot or soft.
            wq = q if weights is None else q * weights[0][sl]
            ce = -(wq * F.log_softmax(z, dim=1)).sum(dim=1)
            total = total + torch.where(fam_known, ce, torch.zeros_like(ce))
            count = count + fam_known.to(logits.dtype)
        else:
            # Each value of a multi family is one binary attribute of APR (its colours).
            bce = F.binary_cross_entropy_with_logits(z, q, reduction="none")
            if weights is not None:
                bce = bce * (q * weights[0][sl] + (1.0 - q) * weights[1][sl])
            total = total + torch.where(k, bce, torch.zeros_like(bce)).sum(dim=1)
            count = count + k.to(logits.dtype).sum(dim=1)
    return total, count


@register_loss("apr_attributes", AprAttributeLossConfig)
def attribute_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    groups: AttributeGroups,
    *,
    balance: Balance = "none",
    prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of the M attribute classification losses over known attributes (APR Eq. 2, 3).

    Args:
        logits: ``(B, A)`` attribute scores on the flat schema layout (before softmax/sigmoid).
        targets: ``(B, A)`` 0/1 targets from ``AttributeSchema.encode`` (one-hot inside each
            single family; soft targets are accepted by Eq. 2's ``-sum_j q(j) log p(j)``).
        mask: ``(B, A)`` 1 where the value is known, 0 where unknown; unknown entries contribute
            nothing. A single family is either wholly known or wholly unknown in a row.
        groups: the :class:`AttributeSchema`, or ``(slice, "single"|"multi")`` pairs.
        balance: ``"none"`` (APR) or ``"inverse_frequency"`` (see :func:`balance_weights`).
        prior: ``(A,)`` training frequency of each value; required by ``inverse_frequency``.

    Returns:
        Scalar: the sum of every known attribute's (weighted) loss in the batch divided by the
        number of known attributes (``1/M sum_i L_att`` averaged over the batch); 0 when
        nothing is known.
    """
    check_float("logits", logits, 2)
    check_float("targets", targets, 2)
    check_same_shape("logits", logits, "targets", targets)
    known = check_mask("mask", mask, tuple(logits.shape))
    pairs = attribute_groups(groups, logits.shape[1])
    weights = None
    if balance == "inverse_frequency":
        if prior is None:
            raise InvalidInput("balance 'inverse_frequency' needs the attribute prior (the "
                               "training set's frequency of every value)")
        prior = check_float("prior", prior, 1)
        if prior.shape[0] != logits.shape[1]:
            raise InvalidInput(f"prior has {prior.shape[0]} values, the logits "
                               f"{logits.shape[1]}")
        weights = balance_weights(prior.to(logits.dtype), pairs)
    elif balance != "none":
        raise InvalidInput(f"balance must be 'none' or 'inverse_frequency', not {balance!r}")
    total, count = _per_attribute_terms(logits, targets, known, pairs, weights)
    return total.sum() / count.sum().clamp(min=1.0)


@register_loss("apr", AprLossConfig)
def apr_loss(
    id_logits: torch.Tensor,
    id_labels: torch.Tensor,
    attr_logits: torch.Tensor,
    attr_targets: torch.Tensor,
    attr_mask: torch.Tensor,
    groups: AttributeGroups,
    *,
    lambda_id: float = 8.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Weighted sum of the ID loss and the mean attribute loss (APR Eq. 3).

    Args:
        id_logits: ``(B, K)`` identity scores of FC0.
        id_labels: ``(B,)`` int64 identities in ``[0, K)``.
        attr_logits: ``(B, A)`` attribute scores of FC1..FCM on the flat schema layout.
        attr_targets: ``(B, A)`` attribute targets (see :func:`attribute_loss`).
        attr_mask: ``(B, A)`` 1 = known, 0 = unknown.
        groups: the :class:`AttributeSchema`, or ``(slice, kind)`` pairs.
        lambda_id: APR's lambda (8).
        label_smoothing: ID label smoothing (0 in APR).

    Returns:
        Scalar ``lambda * L_ID + 1/M sum_i L_att``.
    """
    if attr_logits.shape[0] != id_logits.shape[0]:
        raise InvalidInput(
            f"id_logits {tuple(id_logits.shape)} and attr_logits {tuple(attr_logits.shape)} "
            "must come from the same batch"
        )
    l_id = identity_loss(id_logits, id_labels, label_smoothing=label_smoothing)
    return lambda_id * l_id + attribute_loss(attr_logits, attr_targets, attr_mask, groups)
