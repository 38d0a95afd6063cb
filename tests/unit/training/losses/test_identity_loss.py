"""Identity losses on hand-computable inputs (APR Eq. 1, cross-modal shared classifier)."""

from __future__ import annotations

import math

import pytest
import torch

from pedsearch.errors import InvalidInput
from training.losses.identity import (
    cross_modal_identity_loss,
    identity_loss,
    shared_classifier_logits,
)

LN3 = math.log(3.0)


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dim() == 0, f"loss must be a scalar, got shape {tuple(actual.shape)}"
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


def test_identity_loss_by_hand():
    # row 0: logits [0, ln 3] -> p = [1/4, 3/4], label 1 -> -ln(3/4) = ln(4/3)
    # row 1: logits [0, 0]    -> p = [1/2, 1/2], label 0 -> ln 2
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]])
    labels = torch.tensor([1, 0])
    close(identity_loss(logits, labels), (math.log(4 / 3) + math.log(2)) / 2)


def test_identity_loss_label_smoothing_by_hand():
    # eps = 0.2 over C = 2: q = [0.1, 0.9] for label 1; p = [1/4, 3/4]
    # -(0.1 ln(1/4) + 0.9 ln(3/4))
    logits = torch.tensor([[0.0, LN3]])
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    close(identity_loss(logits, torch.tensor([1]), label_smoothing=0.2), expected)


def test_identity_loss_confident_and_right_is_near_zero():
    logits = torch.tensor([[30.0, -30.0], [-30.0, 30.0]])
    close(identity_loss(logits, torch.tensor([0, 1])), 0.0)


def test_cross_modal_identity_loss_by_hand():
    # W = I (2 classes, 2-d), no bias: logits = features
    # image [ln3, 0], label 0 -> p0 = 3/4 -> ln(4/3); text [0, 0] -> ln 2
    # image [0, 0], label 1 -> ln 2;                 text [0, ln3], label 1 -> ln(4/3)
    # mean over images + mean over texts = (ln(4/3) + ln2)/2 * 2
    w = torch.eye(2)
    img = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    txt = torch.tensor([[0.0, 0.0], [0.0, LN3]])
    labels = torch.tensor([0, 1])
    close(cross_modal_identity_loss(img, txt, labels, w), math.log(4 / 3) + math.log(2))


def test_cross_modal_identity_loss_bias_by_hand():
    # W = 0, bias [ln3, 0] -> every logit row is [ln3, 0]; labels 0 -> ln(4/3) per modality
    w = torch.zeros(2, 2)
    b = torch.tensor([LN3, 0.0])
    f = torch.ones(1, 2)
    close(cross_modal_identity_loss(f, f, torch.tensor([0]), w, b), 2 * math.log(4 / 3))


def test_normalized_weight_ignores_class_weight_norms():
    # CMAAM Eq. 13: W rows [2,0], [0,1] normalise to I, so the loss equals the W = I one
    img = torch.tensor([[LN3, 0.0]])
    txt = torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([0])
    w = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = math.log(4 / 3) + math.log(2)
    close(cross_modal_identity_loss(img, txt, labels, w, normalize_weight=True), expected)
    assert cross_modal_identity_loss(img, txt, labels, w).item() != pytest.approx(expected)


def test_shared_classifier_logits_shape_and_values():
    f = torch.tensor([[1.0, 2.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(shared_classifier_logits(f, w), torch.tensor([[1.0, 2.0, 3.0]]))


def test_backward_gives_finite_gradients_with_a_single_sample_identity():
    img = torch.randn(3, 4, requires_grad=True)
    txt = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(5, 4, requires_grad=True)
    loss = cross_modal_identity_loss(img, txt, torch.tensor([0, 0, 4]), w, normalize_weight=True)
    loss.backward()
    for t in (img, txt, w):
        assert t.grad is not None and torch.isfinite(t.grad).all()


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.tensor([0, 2]), r"\[0, 2\)"),
        (torch.tensor([-1, 0]), r"\[0, 2\)"),
        (torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([0, 1, 1]), r"shape \(2,\)"),
    ],
)
def test_bad_labels_are_invalid_input(labels, match):
    with pytest.raises(InvalidInput, match=match):
        identity_loss(torch.zeros(2, 2), labels)


def test_bad_shapes_are_invalid_input():
    with pytest.raises(InvalidInput, match="paired"):
        cross_modal_identity_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor([0, 1]),
                                  torch.zeros(2, 3))
    with pytest.raises(InvalidInput, match="expects 4-d"):
        cross_modal_identity_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]),
                                  torch.zeros(2, 4))
    with pytest.raises(InvalidInput, match="floating"):
        identity_loss(torch.zeros(2, 2, dtype=torch.int64), torch.tensor([0, 1]))
    with pytest.raises(InvalidInput, match="empty"):
        identity_loss(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
