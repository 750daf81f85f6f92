"""PPO's math against numbers worked out by hand."""

import math

import pytest
import torch

from training.methods.ppo import (
    batch_indices,
    gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def test_masked_mean_ignores_masked_entries():
    assert masked_mean(t([1, 2, 3, 100]), t([1, 1, 1, 0])).item() == pytest.approx(2.0)
    per_row = masked_mean(t([[1, 3, 100], [4, 100, 100]]), t([[1, 1, 0], [1, 0, 0]]), dim=1)
    assert per_row.tolist() == pytest.approx([2.0, 4.0])


def test_gae_three_tokens_by_hand():
    # gamma=1, lam=0.95; the episode ends after the 3rd token (next value 0):
    # delta2 = 1 + 0 - 0.8 = 0.2                      A2 = 0.2
    # delta1 = 0 + 0.8 - 0.4 = 0.4                    A1 = 0.4 + 0.95 * 0.2 = 0.59
    # delta0 = 0 + 0.4 - 0.5 = -0.1                   A0 = -0.1 + 0.95 * 0.59 = 0.4605
    adv, ret = gae(t([[0, 0, 1]]), t([[0.5, 0.4, 0.8]]), t([[1, 1, 1]]), gamma=1.0, lam=0.95)
    assert adv[0].tolist() == pytest.approx([0.4605, 0.59, 0.2])
    assert ret[0].tolist() == pytest.approx([0.9605, 0.99, 1.0])  # advantages + values


def test_gae_ignores_what_follows_the_mask():
    # Row 2 ends after 2 tokens; the garbage rewards (5) and values (9) after it must not leak in.
    # gamma=0.9, lam=0.5:  delta1 = 1.0 + 0.9 * 0 - 0.3 = 0.7               A1 = 0.7
    #                      delta0 = 0.5 + 0.9 * 0.3 - 0.2 = 0.57            A0 = 0.57 + 0.45 * 0.7 = 0.885
    rewards = t([[0, 0, 1, 7], [0.5, 1.0, 5, 5]])
    values = t([[0.5, 0.4, 0.8, 7], [0.2, 0.3, 9, 9]])
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert adv[1].tolist() == pytest.approx([0.885, 0.7, 0, 0])
    assert ret[1].tolist() == pytest.approx([1.085, 1.0, 0, 0])
    # row 1 with gamma=0.9, lam=0.5: A2 = 1 - 0.8 = 0.2; A1 = 0.9*0.8 - 0.4 + 0.45*0.2 = 0.41;
    # A0 = 0.9*0.4 - 0.5 + 0.45*0.41 = 0.0445
    assert adv[0].tolist() == pytest.approx([0.0445, 0.41, 0.2, 0])


def test_masked_whiten_by_hand():
    # unmasked 1, 2, 3: mean 2, unbiased variance (1 + 0 + 1) / (3 - 1) = 1
    out = masked_whiten(t([1, 2, 3, 100]), t([1, 1, 1, 0]))
    assert out.tolist() == pytest.approx([-1, 0, 1, 0], abs=1e-6)
    # 2, 4, 6, 8: mean 5, unbiased variance (9 + 1 + 1 + 9) / 3 = 20/3
    out = masked_whiten(t([[2, 4], [6, 8]]), t([[1, 1], [1, 1]]))
    s = math.sqrt(20 / 3)
    assert out.flatten().tolist() == pytest.approx([-3 / s, -1 / s, 1 / s, 3 / s], abs=1e-6)


def test_token_rewards_fold_kl_and_score_at_last_token():
    # kl = logp - ref = [0.5, 0, -1, (masked)]; rewards = -0.1 * kl, plus the score 2 on the last real token
    rewards, kl = token_rewards(t([[-1, -2, -3, -4]]), t([[-1.5, -2, -2, 0]]), t([2.0]), t([[1, 1, 1, 0]]), 0.1)
    assert kl[0].tolist() == pytest.approx([0.5, 0, -1, 0])
    assert rewards[0].tolist() == pytest.approx([-0.05, 0, 2.1, 0])


def test_policy_loss_clipping_by_hand():
    # cliprange 0.2; per token: ratio, advantage -> max(-A*r, -A*clip(r))
    #   1.5,  1 -> max(-1.5, -1.2) = -1.2   clipped
    #   0.9, -2 -> max( 1.8,  1.8) =  1.8   inside the range
    #   0.5,  1 -> max(-0.5, -0.8) = -0.5   clip inactive: the unclipped term is the pessimistic one
    #   0.5, -1 -> max( 0.5,  0.8) =  0.8   clipped
    #   3.0, 10 -> masked out
    ratios = [1.5, 0.9, 0.5, 0.5, 3.0]
    old = t([-1.0, -2.0, -0.5, -1.5, -1.0])
    new = (old + torch.log(t(ratios))).requires_grad_()
    adv, mask = t([1, -2, 1, -1, 10]), t([1, 1, 1, 1, 0])
    loss, clipfrac, approxkl = policy_loss(new, old, adv, mask, cliprange=0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.8 - 0.5 + 0.8) / 4)
    assert clipfrac.item() == pytest.approx(2 / 4)
    logs = [math.log(r) for r in ratios[:4]]
    assert approxkl.item() == pytest.approx(0.5 * sum(x * x for x in logs) / 4)
    loss.backward()
    # clipped and masked tokens get no gradient; the others d/dlogp (-A * r) / 4 = -A * r / 4
    assert new.grad.tolist() == pytest.approx([0, 2 * 0.9 / 4, -0.5 / 4, 0, 0])


def test_policy_loss_is_plain_surrogate_without_change():
    logp = t([-1.0, -2.0])
    loss, clipfrac, approxkl = policy_loss(logp, logp, t([1.0, 3.0]), t([1, 1]), cliprange=0.2)
    assert loss.item() == pytest.approx(-2.0)
    assert clipfrac.item() == 0 and approxkl.item() == 0


def test_value_loss_clipping_by_hand():
    # cliprange_value 0.2, old values 0; per token: new, return -> 0.5 * max(sq err new, sq err clipped)
    #    0.5, 1 -> clipped 0.2: max(0.25, 0.64) = 0.64   clip active (the clipped value is worse)
    #    0.1, 1 -> inside:      max(0.81, 0.81) = 0.81
    #   -0.5, 0 -> clipped -0.2: max(0.25, 0.04) = 0.25  clip inactive
    #    100, 0 -> masked out
    new = t([0.5, 0.1, -0.5, 100.0])
    loss = value_loss(new, t([0, 0, 0, 0]), t([1, 1, 0, 0]), t([1, 1, 1, 0]), cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 0.25) / 3)


def test_batch_indices_cycle_seeded_epochs():
    steps = [batch_indices(10, 4, s, seed=3) for s in range(1, 6)]  # 20 rows drawn: two epochs of 10
    flat = [i for b in steps for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # each epoch is shuffled afresh
    assert steps == [batch_indices(10, 4, s, seed=3) for s in range(1, 6)]  # a function of the step alone
    assert batch_indices(10, 4, 1, seed=4) != steps[0]
