"""The leaderboard's statistics (webapp/ratings/bt.py), pure: no database."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from webapp.ratings import bt


def simulate(theta, votes, seed=0, tie_share=0.0):
    """Votes between random pairs: i beats j with probability sigmoid(theta_i - theta_j); a share of them
    turned into ties at random."""
    rng = np.random.default_rng(seed)
    n = len(theta)
    i = rng.integers(0, n, votes)
    j = (i + rng.integers(1, n, votes)) % n
    p = 1 / (1 + np.exp(-(np.asarray(theta)[i] - np.asarray(theta)[j])))
    s = (rng.random(votes) < p).astype(float)
    s[rng.random(votes) < tie_share] = 0.5
    return i, j, s


def test_recovers_known_strengths_rank_order_and_log_ratios():
    true = np.array([-1.2, -0.5, 0.0, 0.4, 1.3])
    i, j, s = simulate(true, 20_000)
    fit = bt.bradley_terry(5, i, j, s, rounds=200)
    assert list(np.argsort(fit.theta)) == [0, 1, 2, 3, 4]
    # log-strength differences (log of strength ratios) within 0.1 of the truth
    assert np.allclose(fit.theta - fit.theta.mean(), true - true.mean(), atol=0.1)
    # and the truth lies inside (or at most a hair outside) the 95 % intervals
    centred = true - true.mean()
    assert np.all(fit.low - 0.05 <= centred) and np.all(centred <= fit.high + 0.05)
    assert np.all(fit.high - fit.low < 0.3)
    # the Elo-scale score is the same ranking, 400/ln(10) points per unit of theta
    assert np.allclose(np.diff(fit.score), bt.ELO_SCALE * np.diff(fit.theta))


def test_ties_count_half():
    wins, games = bt.pair_tables(2, [0], [1], [0.5])
    assert wins.tolist() == [[0, 0.5], [0.5, 0]] and games.tolist() == [[0, 1], [1, 0]]
    # only ties: equal strengths
    fit = bt.bradley_terry(3, [0, 1, 0] * 10, [1, 2, 2] * 10, [0.5] * 30, rounds=50)
    assert np.allclose(fit.theta, 0, atol=1e-9)
    # one win + two ties against the same opponent is 2 of 3 points: theta gap ~ log(2)
    fit = bt.bradley_terry(2, [0] * 300, [1] * 300, [1.0, 0.5, 0.5] * 100, rounds=0)
    assert fit.theta[0] - fit.theta[1] == pytest.approx(math.log(2), abs=0.01)


def test_perfect_record_and_no_votes_are_finite():
    # contestant 0 wins all its votes, 3 has none
    i = [0] * 20 + [1] * 10
    j = [1] * 10 + [2] * 10 + [2] * 10
    s = [1.0] * 20 + [0.5] * 10
    fit = bt.bradley_terry(4, i, j, s, rounds=100)
    assert np.all(np.isfinite(fit.theta))
    assert fit.theta[0] == max(fit.theta) and fit.theta[0] < 20
    assert fit.perfect == [0]
    assert fit.votes[3] == 0 and np.isnan(fit.low[3]) and np.isnan(fit.high[3])
    assert np.all(np.isfinite(fit.low[:3])) and np.all(np.isfinite(fit.high[:3]))
    # nothing at all
    empty = bt.bradley_terry(3, [], [], [], rounds=100)
    assert np.all(empty.theta == 0) and np.all(np.isnan(empty.low))
    assert bt.elo(3, [], [], []).tolist() == [1000.0, 1000.0, 1000.0]
    assert bt.bradley_terry(0, [], [], []).theta.shape == (0,)  # no contestants at all
    with pytest.raises(ValueError):
        bt.fit_bt(np.zeros((2, 2)), np.zeros((2, 2)), ridge=0)


def test_batched_fit_matches_single_fits():
    i, j, s = simulate([0.0, 0.7, -0.4], 300, seed=3, tie_share=0.2)
    boot = bt.bootstrap_bt(3, i, j, s, rounds=5, seed=1)
    assert boot.shape == (5, 3)
    wins, games = bt.pair_tables(3, i, j, s)
    assert np.allclose(bt.fit_bt(np.stack([wins, wins]), np.stack([games, games]))[1], bt.fit_bt(wins, games))


def test_bootstrap_of_10000_votes_over_10_runs_is_vectorised():
    i, j, s = simulate(np.linspace(-1, 1, 10), 10_000, tie_share=0.1)
    start = time.perf_counter()
    fit = bt.bradley_terry(10, i, j, s, rounds=1000)
    elapsed = time.perf_counter() - start
    assert elapsed < 6, f"{elapsed:.2f} s (the goal is under 2 s; this machine is shared)"
    assert np.all(fit.low <= fit.theta) and np.all(fit.theta <= fit.high)


def test_elo_moves_towards_the_winner_and_conserves_points():
    ratings = bt.elo(2, [0, 0, 0], [1, 1, 1], [1.0, 1.0, 0.5])
    assert ratings[0] > 1000 > ratings[1]
    assert ratings.sum() == pytest.approx(2000)


def test_win_rate_matrix():
    wins, games = bt.pair_tables(3, [0, 0, 0], [1, 1, 1], [1.0, 0.5, 0.0])
    rate = bt.win_rate_matrix(wins, games)
    assert rate[0][1] == pytest.approx(0.5) and rate[1][0] == pytest.approx(0.5)
    assert rate[0][2] is None and rate[0][0] is None


def test_cohen_kappa_by_hand():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert bt.cohen_kappa(a, b) == pytest.approx(0.4)
    assert bt.percent_agreement(a, b) == pytest.approx(0.7)
    # three categories: p_o = 4/6; marginals A (3,2,1), B (2,2,2): p_e = (6+4+2)/36 = 1/3; kappa = (2/3-1/3)/(2/3) = 0.5
    assert bt.cohen_kappa(list("xxxyyz"), list("xxyyzz")) == pytest.approx(0.5)
    assert bt.cohen_kappa(list("xyxy"), list("xyxy")) == pytest.approx(1.0)
    assert bt.cohen_kappa(list("xxxx"), list("xxxx")) is None  # chance agreement is 1: undefined
    assert bt.cohen_kappa([], []) is None


def test_agreement_pools_rater_pairs_on_shared_items():
    labels = [("i1", "u", "first"), ("i1", "v", "first"), ("i1", "w", "second"),
              ("i2", "u", "tie"), ("i2", "v", "tie"),
              ("i3", "u", "first")]  # rated once: not shared
    result = bt.agreement(labels)
    assert result.items == 2
    assert result.pairs == 4  # (u,v), (u,w), (v,w) on i1; (u,v) on i2
    assert result.percent == pytest.approx(2 / 4)
    uv = next(p for p in result.by_pair if p["raters"] == ("u", "v"))
    assert uv["items"] == 2 and uv["percent"] == 1.0 and uv["kappa"] == pytest.approx(1.0)


def test_kendall_tau_by_hand():
    assert bt.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # C=5, D=1
    assert bt.kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    # tau-b with ties: C=4, D=0, one tie in x, one in y: 4 / sqrt(5 * 5)
    assert bt.kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert bt.kendall_tau([1], [2]) is None
    assert bt.kendall_tau([1, 1], [1, 2]) is None


def test_rank_agreement_flags_reward_hacking():
    theta, low, high = [1.0, 0.0, -1.0], [0.8, -0.2, -1.2], [1.2, 0.2, -0.8]
    same = bt.rank_agreement(theta, low, high, reward=[0.9, 0.5, 0.1])
    assert same.tau == pytest.approx(1) and not same.disagree and same.inversions == []
    hacked = bt.rank_agreement(theta, low, high, reward=[0.1, 0.5, 0.9])  # the reward's favourite loses
    assert hacked.tau == pytest.approx(-1) and hacked.disagree
    assert (2, 0) in hacked.inversions
    # overlapping intervals: an inversion, but not a clear one; tau still flags a reversed order
    unsure = bt.rank_agreement([0.1, 0.0], [-0.5, -0.5], [0.5, 0.5], reward=[0.1, 0.9])
    assert unsure.inversions == [] and unsure.disagree


def test_position_bias():
    fair = bt.position_bias(52, 48)
    assert fair.share_left == pytest.approx(0.52) and not fair.biased
    lean = bt.position_bias(70, 30)
    assert lean.biased and lean.interval[0] > 0.5
    assert bt.position_bias(0, 0).share_left is None
    low, high = bt.wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
