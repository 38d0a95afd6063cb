"""SSAN compound ranking loss on hand-computable inputs (Eqs. 18-21)."""

from __future__ import annotations

import math

import pytest
import torch

from pedsearch.errors import InvalidInput
from training.losses.ssan import SsanBranch, compound_ranking_loss, ssan_loss


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dim() == 0
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32))


def test_compound_ranking_loss_by_hand():
    # unit features; identities [0, 0, 1]
    # I0 = [1,0], I1 = [.6,.8], I2 = [0,1];  T0 = [1,0], T1 = [.8,.6], T2 = [0,1]
    # S[i,k] = I_i . T_k = [[1, .8, 0], [.6, .96, .8], [0, .6, 1]]
    # hardest negative text per image: I0 -> S02 = 0, I1 -> S12 = .8, I2 -> max(0, .6) = .6
    # hardest negative image per text: T0 -> S20 = 0, T1 -> S21 = .6, T2 -> max(0, .8) = .8
    # alpha1 = .2, beta = .1
    # p=0 strong: [.2 - 1 + 0]_+ + [.2 - 1 + 0]_+ = 0
    #     weak D' = T1: S' = .8, lambda = .8, alpha2 = 1.8 * .1 = .18
    #          [.18 - .8 + 0]_+ + [.18 - .8 + .6]_+ = 0
    # p=1 strong: [.2 - .96 + .8]_+ + [.2 - .96 + .6]_+ = .04
    #     weak D' = T0: S' = .6, lambda = .6 / .96 = .625, alpha2 = 1.625 * .1 = .1625
    #          [.1625 - .6 + .8]_+ + [.1625 - .6 + 0]_+ = .3625 -> beta * .3625 = .03625
    # p=2 (one sample of identity 1): strong [.2 - 1 + .6]_+ + [.2 - 1 + .8]_+ = 0, no weak
    # mean = (.04 + .03625) / 3
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    close(compound_ranking_loss(img, txt, torch.tensor([0, 0, 1])), (0.04 + 0.03625) / 3)


def test_compound_ranking_loss_weak_term_uses_the_hardest_image_of_the_other_description():
    # I0 = [1,0], I1 = [1,0], I2 = [0,1]; T0 = [.6,.8], T1 = [1,0], T2 = [0,1]; ids [0,0,1]
    # S = [[.6, 1, 0], [.6, 1, 0], [.8, 0, 1]]
    # hardest negative text: I0, I1 -> S.2 = 0; I2 -> max(.8, 0) = .8
    # hardest negative image: T0 -> S20 = .8; T1 -> S21 = 0; T2 -> max(0, 0) = 0
    # p=0 strong: [.2 - .6 + 0]_+ + [.2 - .6 + .8]_+ = .4
    #     weak D' = T1: S' = 1 > S_pp -> lambda = min(1/.6, 1) = 1, alpha2 = .2
    #          [.2 - 1 + 0]_+ + [.2 - 1 + 0]_+ = 0
    # p=1 strong: [.2 - 1 + 0]_+ + [.2 - 1 + 0]_+ = 0
    #     weak D' = T0: S' = .6, lambda = .6, alpha2 = .16
    #          [.16 - .6 + 0]_+ + [.16 - .6 + .8]_+ = .36 -> beta * .36 = .036
    # p=2 strong: [.2 - 1 + .8]_+ + [.2 - 1 + 0]_+ = 0
    # mean = (.4 + .036) / 3
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    close(compound_ranking_loss(img, txt, torch.tensor([0, 0, 1])), (0.4 + 0.036) / 3)


def test_beta_zero_leaves_the_ranking_loss_of_eq18():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    close(compound_ranking_loss(img, txt, torch.tensor([0, 0, 1]), beta=0.0), 0.04 / 3)


def test_perfect_alignment_is_zero():
    e = torch.eye(3)
    close(compound_ranking_loss(e, e, torch.tensor([0, 1, 2])), 0.0)


def test_no_other_identity_means_no_loss():
    close(compound_ranking_loss(torch.randn(3, 4), torch.randn(3, 4), torch.tensor([5, 5, 5])),
          0.0)


def test_backward_is_finite_with_single_sample_identities():
    img = torch.randn(4, 6, requires_grad=True)
    txt = torch.randn(4, 6, requires_grad=True)
    loss = compound_ranking_loss(img, txt, torch.tensor([0, 0, 1, 2]))
    loss.backward()
    assert loss.dim() == 0
    assert torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()


def test_ssan_loss_by_hand():
    # three branches (global (B,D), PFL parts (B,K,D), PRL parts (B,K,D)), perfectly aligned
    # features of distinct identities -> CR = 0 everywhere; zero logits over C = 2 classes:
    # each CE = ln 2, visual + textual = 2 ln 2 per branch (parts: averaged over K)
    # total = (1 + .5 + .5) * 2 ln 2
    b, k = 2, 3
    glob = torch.eye(2)
    parts = torch.eye(2)[:, None, :].expand(b, k, 2).contiguous()
    branches = [
        SsanBranch(glob, glob, torch.zeros(b, 2), torch.zeros(b, 2)),
        SsanBranch(parts, parts, torch.zeros(b, k, 2), torch.zeros(b, k, 2)),
        SsanBranch(parts, parts, torch.zeros(b, k, 2), torch.zeros(b, k, 2)),
    ]
    close(ssan_loss(branches, torch.tensor([0, 1])), 2.0 * 2 * math.log(2))


def test_ssan_loss_combines_cr_on_concatenated_parts():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 2])
    gv, gt = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    pv, pt = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    loss = ssan_loss([SsanBranch(gv, gt), SsanBranch(pv, pt)], labels, branch_weights=(1.0, 0.5))
    expected = compound_ranking_loss(gv, gt, labels) + 0.5 * compound_ranking_loss(
        pv.reshape(4, -1), pt.reshape(4, -1), labels
    )
    torch.testing.assert_close(loss, expected)


def test_ssan_loss_bad_inputs_are_invalid_input():
    f = torch.zeros(2, 3)
    with pytest.raises(InvalidInput, match="branch weights"):
        ssan_loss([SsanBranch(f, f)], torch.tensor([0, 1]))
    with pytest.raises(InvalidInput, match="one modality"):
        ssan_loss([SsanBranch(f, f, torch.zeros(2, 2))], torch.tensor([0, 1]), branch_weights=(1,))
    with pytest.raises(InvalidInput, match="same shape"):
        compound_ranking_loss(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor([0, 1]))
