"""ViTAA alignment loss and k-reciprocal sampling on hand-computable inputs (Eq. 3, Alg. 1)."""

from __future__ import annotations

import math

import pytest
import torch

from pedsearch.errors import InvalidInput
from training.losses.vitaa import (
    alignment_loss,
    attribute_alignment_loss,
    identity_positive_mask,
    k_reciprocal_positive_mask,
    segmentation_loss,
)

R2 = 1 / math.sqrt(2.0)


def sp(x: float) -> float:
    """softplus: log(1 + e^x)."""
    return math.log1p(math.exp(x))


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dim() == 0
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


def test_alignment_loss_by_hand():
    # v = [[1,0],[0,1]], t = [[1,0],[1,1]], identities [0, 1]: positives on the diagonal
    # S = [[1, 1/sqrt2], [0, 1/sqrt2]]
    # pos (0,0): log(1 + e^{-10 (1 - 0.6)})          = sp(-4)
    # pos (1,1): log(1 + e^{-10 (1/sqrt2 - 0.6)})    = sp(-10 (1/sqrt2 - 0.6))
    # neg (0,1): log(1 + e^{40 (1/sqrt2 - 0.4)})     = sp(40 (1/sqrt2 - 0.4))
    # neg (1,0): log(1 + e^{40 (0 - 0.4)})           = sp(-16)
    # visual anchors + textual anchors, each sum / B = 2 * sum / 2 = sum
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    pos = identity_positive_mask(torch.tensor([0, 1]))
    expected = sp(-4) + sp(-10 * (R2 - 0.6)) + sp(40 * (R2 - 0.4)) + sp(-16)
    close(alignment_loss(v, t, pos), expected)


def test_perfect_alignment_is_the_minimum():
    # positives at S = 1 and negatives at S = -1 minimise every term:
    # 2 * (2 sp(-4) + 2 sp(-56)) / 2
    v = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    pos = torch.eye(2, dtype=torch.bool)
    loss = alignment_loss(v, v.detach(), pos)
    close(loss, 2 * sp(-4) + 2 * sp(-56))
    loss.backward()
    # at the optimum the remaining gradient only pulls along the feature (norm), not across
    torch.testing.assert_close(v.grad[:, 1], torch.zeros(2))
    moved = torch.tensor([[1.0, 0.3], [-1.0, 0.0]])
    assert alignment_loss(moved, v.detach(), pos) > loss


def test_alignment_loss_ignores_invalid_pairs():
    # only text 0 is valid: pairs (0,0) positive S = 1 and (1,0) negative S = 0 remain
    # 2 * (sp(-4) + sp(-16)) / 2
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    pos = torch.eye(2, dtype=torch.bool)
    close(alignment_loss(v, t, pos, textual_valid=torch.tensor([1, 0])), sp(-4) + sp(-16))
    close(alignment_loss(v, t, pos, visual_valid=torch.zeros(2)), 0.0)


def test_alignment_loss_hyper_parameters():
    # one pair, S = 1, positive: sp(-tau_p (1 - alpha)) * 2 / 1
    v = torch.tensor([[1.0, 0.0]])
    pos = torch.ones(1, 1, dtype=torch.bool)
    close(alignment_loss(v, v, pos, alpha=0.5, beta=0.2, tau_p=2.0), 2 * sp(-1.0))
    with pytest.raises(InvalidInput, match="beta"):
        alignment_loss(v, v, pos, alpha=0.3, beta=0.5)


SIM = torch.tensor([[0.9, 0.8, 0.1], [0.85, 0.25, 0.3], [0.1, 0.2, 0.7]])


def test_k_reciprocal_k1_by_hand():
    # top-1 text of each image: 0, 0, 2; top-1 image of each text: 0 (col .9), 0 (.8), 2 (.7)
    # mutual: (0,0) and (2,2); image 1's top text 0 prefers image 0
    mask = k_reciprocal_positive_mask(SIM, k=1)
    assert mask.tolist() == [[True, False, False], [False, False, False], [False, False, True]]


def test_k_reciprocal_k2_by_hand():
    # top-2 texts: image0 {0,1}, image1 {0,2}, image2 {2,1}
    # top-2 images: text0 {0,1}, text1 {0,1}, text2 {2,1}
    # (i,j) kept when j in K(i) and i in K(j)
    mask = k_reciprocal_positive_mask(SIM, k=2)
    assert mask.tolist() == [[True, True, False], [True, False, True], [False, False, True]]
    # with identities [0, 1, 1] the same-identity pairs join: the alignment's positive set
    mask = k_reciprocal_positive_mask(SIM, k=2, labels=torch.tensor([0, 1, 1]))
    assert mask.tolist() == [[True, True, False], [True, True, True], [False, True, True]]


def test_k_reciprocal_skips_invalid_samples_and_clamps_k():
    # text 2 invalid: image 2's top-1 among texts {0,1} is text 1, whose top image is 0
    mask = k_reciprocal_positive_mask(SIM, k=1, textual_valid=torch.tensor([1, 1, 0]))
    assert mask.tolist() == [[True, False, False], [False, False, False], [False, False, False]]
    assert k_reciprocal_positive_mask(SIM, k=10).all()


def test_attribute_alignment_with_and_without_surrogates_by_hand():
    # two identities with the same attribute feature: S = 1 for all four pairs
    # identity positives only: 2 positives sp(-4) + 2 negatives sp(40 * 0.6) = sp(24)
    # k-reciprocal: every pair is mutual -> 4 positives sp(-4)
    # both directions, / B = 2: total = sum over pairs
    parts = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])  # (B=2, P=1, D=2)
    labels = torch.tensor([0, 1])
    close(attribute_alignment_loss(parts, parts, labels, surrogate=False),
          2 * sp(-4) + 2 * sp(24))
    close(attribute_alignment_loss(parts, parts, labels), 4 * sp(-4))


def test_attribute_alignment_averages_over_attributes_present():
    # attribute 1 is missing in every text, so only attribute 0 counts (mean over 1 attribute)
    parts = torch.tensor([[[1.0, 0.0], [0.3, 0.1]], [[1.0, 0.0], [0.2, 0.9]]])
    tv = torch.tensor([[1, 0], [1, 0]])
    close(attribute_alignment_loss(parts, parts, torch.tensor([0, 1]), textual_valid=tv),
          4 * sp(-4))
    close(attribute_alignment_loss(parts, parts, torch.tensor([0, 1]),
                                   textual_valid=torch.zeros(2, 2)), 0.0)


def test_attribute_alignment_backward_with_single_sample_identity():
    v = torch.randn(4, 5, 3, requires_grad=True)
    t = torch.randn(4, 5, 3, requires_grad=True)
    valid = torch.tensor([[1, 1, 0, 1, 1]] * 3 + [[0, 1, 1, 1, 1]])
    loss = attribute_alignment_loss(v, t, torch.tensor([0, 0, 1, 2]), textual_valid=valid)
    loss.backward()
    assert loss.dim() == 0
    assert torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()


def test_segmentation_loss_by_hand():
    # zero logits over 2 categories: ln 2 per labelled pixel; the -1 pixel is ignored
    logits = torch.zeros(1, 2, 1, 2)
    close(segmentation_loss(logits, torch.tensor([[[0, -1]]])), math.log(2))
    close(segmentation_loss(logits, torch.full((1, 1, 2), -1)), 0.0)
    with pytest.raises(InvalidInput, match=r"\[0, 2\)"):
        segmentation_loss(logits, torch.tensor([[[0, 5]]]))


def test_bad_inputs_are_invalid_input():
    with pytest.raises(InvalidInput, match="shape"):
        alignment_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(3, 3))
    with pytest.raises(InvalidInput, match="k must be"):
        k_reciprocal_positive_mask(SIM, k=0)
    with pytest.raises(InvalidInput, match="square"):
        k_reciprocal_positive_mask(SIM[:2], labels=torch.tensor([0, 1]))
