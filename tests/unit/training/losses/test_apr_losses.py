"""APR attribute and combined losses on hand-computable inputs (APR Eqs. 1-3)."""

from __future__ import annotations

import math

import pytest
import torch

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput
from training.losses.apr import apr_loss, attribute_groups, attribute_loss

LN2, LN3, LN43 = math.log(2.0), math.log(3.0), math.log(4 / 3)
# one softmax family over columns 0-1, one multi family (two sigmoids) over columns 2-3
GROUPS = [(slice(0, 2), "single"), (slice(2, 4), "multi")]


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dim() == 0
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


def test_attribute_loss_by_hand_with_masked_family():
    # row 0, all known:
    #   softmax [0, ln3] target value 1 -> -ln(3/4) = ln(4/3)
    #   sigmoid z=0 target 1 -> ln 2;  sigmoid z=0 target 0 -> ln 2      (3 attributes)
    # row 1, the softmax family unknown (mask 0) -> contributes nothing:
    #   sigmoid z=ln3 target 1 -> -ln(3/4) = ln(4/3)
    #   sigmoid z=-ln3 target 0 -> -ln(1 - 1/4) = ln(4/3)                  (2 attributes)
    # mean over the 5 known attributes = (3 ln(4/3) + 2 ln 2) / 5
    logits = torch.tensor([[0.0, LN3, 0.0, 0.0], [5.0, -5.0, LN3, -LN3]])
    targets = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    close(attribute_loss(logits, targets, mask, GROUPS), (3 * LN43 + 2 * LN2) / 5)


def test_attribute_loss_with_the_schema_counts_each_multi_value_as_one_attribute():
    schema = AttributeSchema.default()
    t, m = schema.encode({"gender": "female", "age": "adult", "upper_color": ["red"]})
    targets, mask = torch.from_numpy(t)[None], torch.from_numpy(m)[None]
    logits = torch.zeros_like(targets)
    # zero logits: gender softmax over 2 -> ln 2; age softmax over 4 -> ln 4;
    # 11 upper colours, each sigmoid(0) -> ln 2.  M = 1 + 1 + 11 = 13 known attributes.
    n_colors = len(schema.family("upper_color").values)
    expected = (LN2 + math.log(4) + n_colors * LN2) / (2 + n_colors)
    close(attribute_loss(logits, targets, mask, schema), expected)


def test_soft_targets_follow_eq2():
    # q = [0.5, 0.5] on p = [1/4, 3/4]: -(0.5 ln(1/4) + 0.5 ln(3/4))
    logits = torch.tensor([[0.0, LN3]])
    targets = torch.tensor([[0.5, 0.5]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    close(attribute_loss(logits, targets, torch.ones(1, 2), [(slice(0, 2), "single")]), expected)


def test_all_masked_is_zero_and_differentiable():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = attribute_loss(logits, torch.zeros(3, 4), torch.zeros(3, 4), GROUPS)
    close(loss, 0.0)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_perfect_prediction_reaches_the_minimum_zero():
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    logits = (targets * 2 - 1) * 40.0
    close(attribute_loss(logits, targets, torch.ones(1, 4), GROUPS), 0.0)


def test_apr_loss_weights_the_id_loss_by_lambda():
    # ID: logits [0, 0], label 0 -> ln 2; attributes: all sigmoid/softmax at 0 with
    # targets from row 0 above -> softmax [0,0] -> ln2, two sigmoids -> ln2 each: mean ln 2
    # lambda = 8 (APR default): 8 ln2 + ln2 = 9 ln2
    id_logits = torch.zeros(1, 2)
    attr = torch.zeros(1, 4)
    targets = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    mask = torch.ones(1, 4)
    close(apr_loss(id_logits, torch.tensor([0]), attr, targets, mask, GROUPS), 9 * LN2)
    close(
        apr_loss(id_logits, torch.tensor([0]), attr, targets, mask, GROUPS, lambda_id=1.0),
        2 * LN2,
    )


def test_apr_loss_backward_with_single_sample_identity():
    schema = AttributeSchema.default()
    rows = [schema.encode({"gender": "male", "hat": "yes"}), schema.encode({"age": "child"})]
    targets = torch.stack([torch.from_numpy(t) for t, _ in rows])
    mask = torch.stack([torch.from_numpy(m) for _, m in rows])
    id_logits = torch.randn(2, 3, requires_grad=True)
    attr = torch.randn(2, schema.dim, requires_grad=True)
    loss = apr_loss(id_logits, torch.tensor([0, 2]), attr, targets, mask, schema)
    loss.backward()
    assert loss.dim() == 0
    assert torch.isfinite(id_logits.grad).all() and torch.isfinite(attr.grad).all()


def test_partly_masked_softmax_family_is_invalid_input():
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    with pytest.raises(InvalidInput, match="known or unknown as a whole"):
        attribute_loss(torch.zeros(1, 4), torch.zeros(1, 4), mask, GROUPS)


def test_bad_groups_and_shapes_are_invalid_input():
    with pytest.raises(InvalidInput, match="schema"):
        attribute_groups(AttributeSchema.default(), 5)
    with pytest.raises(InvalidInput, match="inside"):
        attribute_groups([(slice(0, 9), "multi")], 4)
    with pytest.raises(InvalidInput, match="single"):
        attribute_groups([(slice(0, 2), "softmax")], 4)
    with pytest.raises(InvalidInput, match="same shape"):
        attribute_loss(torch.zeros(1, 4), torch.zeros(1, 3), torch.ones(1, 4), GROUPS)
    with pytest.raises(InvalidInput, match="shape"):
        attribute_loss(torch.zeros(1, 4), torch.zeros(1, 4), torch.ones(2, 4), GROUPS)


def test_inverse_frequency_balance_by_hand():
    from training.losses.apr import attribute_loss, balance_weights

    # one softmax family of 2 values (prior 0.8 / 0.2) and one binary value (prior 0.25)
    groups = [(slice(0, 2), "single"), (slice(2, 3), "multi")]
    prior = torch.tensor([0.8, 0.2, 0.25])
    pos, neg = balance_weights(prior, groups)
    torch.testing.assert_close(pos, torch.tensor([1 / 1.6, 1 / 0.4, 2.0]))
    torch.testing.assert_close(neg[2], torch.tensor(0.5 / 0.75))
    # logits 0: CE of the softmax family = ln 2, BCE of the binary value = ln 2
    logits = torch.zeros(2, 3)
    targets = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    mask = torch.ones(2, 3)
    plain = attribute_loss(logits, targets, mask, groups)
    torch.testing.assert_close(plain, torch.tensor(math.log(2.0)))
    weighted = attribute_loss(logits, targets, mask, groups, balance="inverse_frequency",
                              prior=prior)
    # row 0: rare class (2.5) + present binary (2.0); row 1: common class (0.625) + absent (2/3)
    expected = math.log(2.0) * (2.5 + 2.0 + 0.625 + 2 / 3) / 4
    torch.testing.assert_close(weighted, torch.tensor(expected))
    with pytest.raises(InvalidInput, match="prior"):
        attribute_loss(logits, targets, mask, groups, balance="inverse_frequency")
