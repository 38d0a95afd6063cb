"""AAIPR adversarial and semantic-consistency losses on hand-computable inputs (Eqs. 3-7)."""

from __future__ import annotations

import math

import pytest
import torch

from pedsearch.errors import InvalidInput
from training.losses.aaipr import (
    discriminator_loss,
    discriminator_objective,
    generator_adversarial_loss,
    generator_objective,
    image_concept_loss,
    semantic_consistency_loss,
    semantic_ids_from_attributes,
)

LN2, LN3, LN43 = math.log(2.0), math.log(3.0), math.log(4 / 3)


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dim() == 0
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


def test_discriminator_loss_by_hand():
    # D = sigmoid(logit). Undecided D (logit 0): -ln(1/2) - ln(1 - 1/2) = 2 ln 2
    close(discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0])), 2 * LN2)
    # real logit ln3 -> D = 3/4 -> -ln(3/4) = ln(4/3)
    # fake logit -ln3 -> D = 1/4 -> -ln(1 - 1/4) = ln(4/3)
    close(discriminator_loss(torch.tensor([LN3]), torch.tensor([-LN3])), 2 * LN43)


def test_generator_loss_by_hand_and_column_shape():
    # fake logits [0, ln3] -> D = [1/2, 3/4] -> mean(ln 2, ln(4/3))
    close(generator_adversarial_loss(torch.tensor([[0.0], [LN3]])), (LN2 + LN43) / 2)


def test_saturated_discriminator_stays_finite():
    # D(fake) = sigmoid(-100) ~ e^-100: -log D = 100 (a probability would give log 0 = -inf)
    fake = torch.tensor([-100.0], requires_grad=True)
    loss = generator_adversarial_loss(fake)
    close(loss, 100.0)
    loss.backward()
    assert torch.isfinite(fake.grad).all()


def test_perfect_discriminator_reaches_its_minimum():
    close(discriminator_loss(torch.tensor([50.0, 60.0]), torch.tensor([-50.0])), 0.0)


def test_objectives_by_hand():
    # shared classifier W = I over 2 semantic IDs
    # image concept [ln3, 0], id 0 -> ln(4/3)       (Eq. 3)
    # attribute concept [0, 0], id 0 -> ln 2          (Eq. 6)
    # fake logit 0 -> l_adv^G = ln 2, weighted by lambda_G = 0.001
    w = torch.eye(2)
    img = torch.tensor([[LN3, 0.0]])
    att = torch.tensor([[0.0, 0.0]])
    ids = torch.tensor([0])
    fake = torch.tensor([0.0])
    close(image_concept_loss(img, ids, w), LN43)
    close(semantic_consistency_loss(att, ids, w), LN2)
    close(generator_objective(img, att, ids, fake, w), LN43 + LN2 + 0.001 * LN2)
    # lambda_D = 0.5: 0.5 * 2 ln 2 = ln 2
    close(discriminator_objective(torch.tensor([0.0]), fake), LN2)


def test_generator_objective_backward_reaches_generator_and_classifier():
    img = torch.randn(3, 4, requires_grad=True)
    att = torch.randn(3, 4, requires_grad=True)
    w = torch.randn(5, 4, requires_grad=True)
    disc = torch.nn.Linear(4, 1)
    loss = generator_objective(img, att, torch.tensor([0, 0, 3]), disc(att), w)
    loss.backward()
    for t in (img, att, w):
        assert torch.isfinite(t.grad).all()


def test_semantic_ids_group_identical_descriptions():
    # distinct rows sorted lexicographically: [0,1] -> id 0, [1,0] -> id 1
    ids, table = semantic_ids_from_attributes(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    assert ids.tolist() == [1, 0, 1]
    assert table.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_semantic_ids_keep_unknown_apart_from_known_zero():
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    ids, table = semantic_ids_from_attributes(targets, mask)
    assert ids[0] != ids[1] and len(table) == 2


def test_bad_discriminator_shapes_are_invalid_input():
    with pytest.raises(InvalidInput, match=r"\(B, 1\)"):
        discriminator_loss(torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(InvalidInput, match="empty"):
        generator_adversarial_loss(torch.zeros(0))


def test_without_semantic_consistency_drops_l_sc_only():
    # the same hand example as above: l_I = ln(4/3), l_sc = ln 2 is left out (AAIPR "w/o sc")
    w = torch.eye(2)
    img = torch.tensor([[LN3, 0.0]])
    att = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = generator_objective(img, att, torch.tensor([0]), torch.tensor([0.0]), w,
                               semantic_consistency=False)
    close(loss, LN43 + 0.001 * LN2)
    assert not loss.requires_grad  # nothing of the attribute concept is in the objective
