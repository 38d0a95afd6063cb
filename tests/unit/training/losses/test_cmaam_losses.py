"""CMAAM losses and retrieval score on hand-computable inputs (Eqs. 3-19)."""

from __future__ import annotations

import math

import pytest
import torch

from pedsearch.errors import InvalidInput
from training.losses.cmaam import (
    attribute_frequency_weights,
    attribute_space_loss,
    cmaam_loss,
    coral_loss,
    cosine_attribute_scores,
    feature_norm_regularization,
    latent_attribute_similarity,
    latent_space_loss,
    latent_triplet_loss,
    semantic_margin,
    semantic_similarity,
    semantic_triplet_loss,
    weighted_multilabel_loss,
)
from training.losses.identity import cross_modal_identity_loss

LN2, LN3, LN43 = math.log(2.0), math.log(3.0), math.log(4 / 3)
R2 = 1 / math.sqrt(2.0)


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dim() == 0
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


# -- attribute space ----------------------------------------------------------------------------


def test_frequency_weights_follow_deepmar():
    # r = [0, 1, 0.5]: w^p = e^(1-r) = [e, 1, e^.5]; w^n = e^r = [1, e, e^.5]
    w_p, w_n = attribute_frequency_weights(torch.tensor([0.0, 1.0, 0.5]))
    torch.testing.assert_close(w_p, torch.tensor([math.e, 1.0, math.exp(0.5)]))
    torch.testing.assert_close(w_n, torch.tensor([1.0, math.e, math.exp(0.5)]))
    with pytest.raises(InvalidInput, match=r"\[0, 1\]"):
        attribute_frequency_weights(torch.tensor([1.5]))


def test_cosine_attribute_scores_by_hand():
    # a = [3, 4]: cos with W rows [1,0], [0,1] = [0.6, 0.8]; beta [2, 1]; z [0, 1] -> [1.2, 1.8]
    s = cosine_attribute_scores(
        torch.tensor([[3.0, 4.0]]), torch.eye(2), torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0])
    )
    torch.testing.assert_close(s, torch.tensor([[1.2, 1.8]]))


def test_weighted_multilabel_loss_by_hand():
    # w^p = [2, 1, 1], w^n = [1, 2, 4], alpha = 2
    # row 0: scores 0, targets [1,0,0], all known: P = {0}, N = {1, 2}
    #   positive 2 ln2; negative alpha |P| / |N| * (2 ln2 + 4 ln2) = 2 * 1/2 * 6 ln2 = 6 ln2
    # row 1: scores [ln3, 0, 0], targets [1,1,0], mask [1,1,0]: P = {0, 1}, N = {}
    #   positive 2 * -ln(3/4) + 1 * ln2 = 2 ln(4/3) + ln2; negative 0 (|P| * 0 / max(|N|, 1))
    # row 2: nothing known -> not counted
    # mean over the 2 rows with known attributes
    scores = torch.tensor([[0.0, 0.0, 0.0], [LN3, 0.0, 0.0], [9.0, 9.0, 9.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    w_p, w_n = torch.tensor([2.0, 1.0, 1.0]), torch.tensor([1.0, 2.0, 4.0])
    expected = (8 * LN2 + 2 * LN43 + LN2) / 2
    close(weighted_multilabel_loss(scores, targets, mask, w_p, w_n), expected)


def test_weighted_multilabel_loss_balances_negatives_by_alpha():
    # unit weights, 1 positive, 3 negatives, scores 0: ln2 + alpha * 1/3 * 3 ln2 = (1 + alpha) ln2
    scores = torch.zeros(1, 4)
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    close(weighted_multilabel_loss(scores, targets, torch.ones(1, 4), alpha=2.0), 3 * LN2)
    close(weighted_multilabel_loss(scores, targets, torch.ones(1, 4), alpha=0.5), 1.5 * LN2)


def test_weighted_multilabel_loss_all_masked_is_zero():
    scores = torch.randn(2, 3, requires_grad=True)
    loss = weighted_multilabel_loss(scores, torch.ones(2, 3), torch.zeros(2, 3))
    close(loss, 0.0)
    loss.backward()
    assert torch.isfinite(scores.grad).all()


def test_coral_loss_by_hand():
    # X = [[0,0],[2,0]]: centred [[-1,0],[1,0]], C_I = [[2,0],[0,0]] / (n - 1 = 1)
    # Y = [[0,0],[0,2]]: C_T = [[0,0],[0,2]]
    # ||C_I - C_T||_F^2 = 4 + 4 = 8; / (4 * V^2 = 16) = 0.5
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    close(coral_loss(x, y), 0.5)
    close(coral_loss(x, x + 3.0), 0.0)  # same covariance (a shift) -> the minimum 0


def test_coral_needs_two_samples():
    with pytest.raises(InvalidInput, match="at least 2"):
        coral_loss(torch.zeros(1, 3), torch.zeros(4, 3))


def test_semantic_similarity_and_margin_by_hand():
    # b0 = [1,1,0], b1 = [1,0,0], b2 = [0,0,1]
    # phi01 = 1 / (sqrt2 * 1) = 1/sqrt2; phi02 = phi12 = 0; phi_ii = 1
    b = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    phi, comparable = semantic_similarity(b)
    expected = torch.tensor([[1.0, R2, 0.0], [R2, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(phi, expected)
    assert comparable.all()
    # Eq. 6, gamma 0.5, m_max 0.3: phi <= 0.5 -> 0.3; phi 0.75 -> 0.3 / 0.5 * 0.25 = 0.15; 1 -> 0
    m = semantic_margin(torch.tensor([0.0, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(m, torch.tensor([0.3, 0.3, 0.15, 0.0]))


def test_semantic_similarity_uses_commonly_known_attributes():
    # b0 = [1,1,0] knows {0, 2}; b1 = [1,0,0] knows {0, 1}: common {0}: [1] vs [1] -> phi = 1
    # b2 knows nothing -> not comparable with anyone
    b = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    phi, comparable = semantic_similarity(b, mask)
    assert phi[0, 1].item() == pytest.approx(1.0)
    assert comparable[0, 1] and not comparable[2].any()


def _two_pairs():
    # I0 = [1,0], I1 = [0,1], T0 = [1,0], T1 = [1,1]
    # S_a[i, k] = cos(I_i, T_k): [[1, 1/sqrt2], [0, 1/sqrt2]]
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    return img, txt


def test_semantic_triplet_loss_by_hand_full_margin():
    # b0 = [1,0], b1 = [0,1]: phi01 = 0 <= gamma -> margin m_max = 0.3 both ways
    # image anchor 0: [0.3 + S(I0,T1) - S(I0,T0)]_+ = 0.3 + 1/sqrt2 - 1 = 1/sqrt2 - 0.7
    # image anchor 1: [0.3 + S(I1,T0) - S(I1,T1)]_+ = [0.3 + 0 - 1/sqrt2]_+ = 0
    # text anchor 0:  [0.3 + S(I1,T0) - S(I0,T0)]_+ = [0.3 - 1]_+ = 0
    # text anchor 1:  [0.3 + S(I0,T1) - S(I1,T1)]_+ = 0.3
    img, txt = _two_pairs()
    attrs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    close(semantic_triplet_loss(img, txt, attrs), R2 - 0.7 + 0.3)


def test_semantic_triplet_loss_by_hand_adaptive_margin():
    # b0 = [1,1,1,1], b1 = [1,1,1,0]: phi = 3 / (2 sqrt3) = sqrt3/2 > gamma
    # margin = 0.3 / (1 - 0.5) * (1 - sqrt3/2)
    # image anchor 0: m + 1/sqrt2 - 1 < 0 -> 0; image anchor 1 and text anchor 0: < 0 -> 0
    # text anchor 1: m + S(I0,T1) - S(I1,T1) = m
    img, txt = _two_pairs()
    attrs = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    m = 0.3 / 0.5 * (1 - math.sqrt(3) / 2)
    close(semantic_triplet_loss(img, txt, attrs), m)


def test_semantic_triplet_loss_has_no_negatives_among_identical_descriptions():
    img, txt = _two_pairs()
    close(semantic_triplet_loss(img, txt, torch.ones(2, 3)), 0.0)  # phi = 1 everywhere
    close(semantic_triplet_loss(img, txt, torch.ones(2, 3), torch.zeros(2, 3)), 0.0)  # all masked


def test_semantic_triplet_loss_perfect_alignment_is_zero():
    e = torch.eye(2)
    close(semantic_triplet_loss(e, e, torch.tensor([[1.0, 0.0], [0.0, 1.0]])), 0.0)


# -- latent space --------------------------------------------------------------------------------


def test_latent_triplet_loss_by_hand_two_pairs():
    # labels [0, 1]; same S_l as _two_pairs; Delta = 0.3 -> same arithmetic as the full-margin
    # semantic triplet: (1/sqrt2 - 0.7) + 0.3
    img, txt = _two_pairs()
    close(latent_triplet_loss(img, txt, torch.tensor([0, 1])), R2 - 0.7 + 0.3)


def test_latent_triplet_loss_hardest_positive_by_hand():
    # I = [[1,0],[1,0],[0,1]], T = [[1,0],[0,1],[0,1]], labels [0,0,1]
    # S[i,k] = [[1,0,0],[1,0,0],[0,1,1]]
    # image anchors: I0 hard pos min(S00, S01) = 0, hard neg S02 = 0 -> 0.3; I1 same -> 0.3;
    #                I2 pos S22 = 1, neg max(S20, S21) = 1 -> 0.3
    # text anchors:  T0 pos min(S00, S10) = 1, neg S20 = 0 -> 0; T1 pos min(S01, S11) = 0,
    #                neg S21 = 1 -> 1.3; T2 pos S22 = 1, neg max(S02, S12) = 0 -> 0
    # sum = 0.3 * 3 + 1.3 = 2.2
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    close(latent_triplet_loss(img, txt, torch.tensor([0, 0, 1])), 2.2)


def test_latent_triplet_loss_without_other_identities_is_zero():
    img, txt = _two_pairs()
    close(latent_triplet_loss(img, txt, torch.tensor([3, 3])), 0.0)


def test_feature_norm_regularization_by_hand():
    # norms [5, 1]: ||v||_2 = sqrt(26); population variance = ((5-3)^2 + (1-3)^2) / 2 = 4
    loss = feature_norm_regularization(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 1.0]]))
    close(loss, 1e-3 * math.sqrt(26) + 4.0)
    # equal norms: no variance, only lambda_reg * ||v|| = 1e-3 * sqrt(2)
    close(feature_norm_regularization(torch.eye(2)[:1], torch.eye(2)[1:]), 1e-3 * math.sqrt(2))


def test_latent_space_loss_by_hand():
    # perfectly aligned unit features, labels [0, 1], classifier W = I (normalised: unchanged)
    # triplet: every anchor [0.3 + 0 - 1]_+ = 0
    # class: each logit row is one-hot-ish [1, 0] -> -ln(e / (e + 1)) = ln(1 + e^-1); the image
    #        mean plus the text mean = 2 ln(1 + e^-1)
    # norm-reg: four norms of 1: 1e-3 * sqrt(4) + 1 * 0
    e = torch.eye(2)
    labels = torch.tensor([0, 1])
    expected = 2 * math.log(1 + math.exp(-1)) + 1e-3 * 2
    close(latent_space_loss(e, e, labels, torch.eye(2)), expected)
    close(latent_space_loss(e, e, labels, torch.eye(2), regularize=False), expected - 2e-3)


def test_cmaam_loss_is_attribute_space_plus_lambda_t_latent_space():
    g = torch.Generator().manual_seed(0)
    n, da, dc, v = 4, 3, 5, 6
    a_i, a_t = torch.randn(n, da, generator=g), torch.randn(n, da, generator=g)
    s_i, s_t = torch.randn(n, v, generator=g), torch.randn(n, v, generator=g)
    c_i, c_t = torch.randn(n, dc, generator=g), torch.randn(n, dc, generator=g)
    targets = (torch.rand(n, v, generator=g) > 0.5).float()
    mask = torch.ones(n, v)
    labels = torch.tensor([0, 0, 1, 2])
    w = torch.randn(3, dc, generator=g)
    total = cmaam_loss(a_i, a_t, s_i, s_t, targets, mask, c_i, c_t, labels, w)
    l_attr = attribute_space_loss(a_i, a_t, s_i, s_t, targets, mask)
    l_lat = latent_space_loss(c_i, c_t, labels, w)
    torch.testing.assert_close(total, l_attr + 3.0 * l_lat)
    # and the latent space is triplet + shared normalised classifier + norm regularisation
    torch.testing.assert_close(
        l_lat,
        latent_triplet_loss(c_i, c_t, labels)
        + cross_modal_identity_loss(c_i, c_t, labels, w, normalize_weight=True)
        + feature_norm_regularization(c_i, c_t),
    )


def test_cmaam_loss_backward_with_single_sample_identity_and_masked_attributes():
    n, da, dc, v = 3, 3, 4, 5
    leaves = [torch.randn(n, d, requires_grad=True) for d in (da, da, v, v, dc, dc)]
    targets = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    w = torch.randn(3, dc, requires_grad=True)
    a_i, a_t, s_i, s_t, c_i, c_t = leaves
    loss = cmaam_loss(a_i, a_t, s_i, s_t, targets, mask, c_i, c_t, torch.tensor([0, 0, 2]), w)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    for t in [*leaves, w]:
        assert torch.isfinite(t.grad).all()


def test_latent_attribute_similarity_by_hand():
    # attribute cos: I [1,0] vs T [1,0], [0,1] -> [1, 0]
    # latent cos:    I [0,1] vs T [0,2], [1,1] -> [1, 1/sqrt2]
    s = latent_attribute_similarity(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        torch.tensor([[0.0, 1.0]]),
        torch.tensor([[0.0, 2.0], [1.0, 1.0]]),
    )
    torch.testing.assert_close(s, torch.tensor([[2.0, R2]]))


def test_bad_inputs_are_invalid_input():
    with pytest.raises(InvalidInput, match="same shape"):
        latent_triplet_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(InvalidInput, match="entries"):
        weighted_multilabel_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3),
                                 torch.ones(2))
    with pytest.raises(InvalidInput, match="rows"):
        semantic_triplet_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2))
