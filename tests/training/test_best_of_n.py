"""Best-of-N: its KL formula against a toy distribution, the choice of the best, and a run on `tiny`
through the real runner (no training; best-of-1, 2, 4 at steps 0, 1, 2)."""

import math

import numpy as np
import pytest

from tests.training.conftest import FAST, MemorySink
from training.config import from_dict
from training.methods.best_of_n import bon_kl, n_at, pick_best, steps_for
from training.runner import run


@pytest.mark.parametrize("n", [1, 2, 4, 16, 64])
def test_the_kl_formula_matches_a_toy_distributions_exact_kl(n):
    """Base: uniform over M outcomes with distinct scores. Best-of-n puts (r/M)^n - ((r-1)/M)^n on the
    outcome of rank r; its KL from the base tends to log n - (n-1)/n as M grows."""
    m = 200_000
    r = np.arange(1, m + 1) / m
    p = r ** n - (r - 1 / m) ** n
    kl = float(np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1) * m), 0.0)))
    assert kl == pytest.approx(bon_kl(n), abs=2e-3)


def test_the_kl_formula_matches_sampled_best_of_n_on_a_skewed_toy_distribution():
    """Empirical: draw n from a non-uniform categorical base with distinct scores, keep the best; the
    plug-in KL of the kept outcomes' histogram matches the formula."""
    rng = np.random.default_rng(0)
    outcomes = 400
    base = rng.dirichlet(np.ones(outcomes) * 2.0)
    scores = rng.permutation(outcomes)  # distinct: no ties
    n, draws = 8, 400_000
    picks = rng.choice(outcomes, size=(draws, n), p=base)
    best = picks[np.arange(draws), np.argmax(scores[picks], axis=1)]
    q = np.bincount(best, minlength=outcomes) / draws
    kl = float(np.sum(q[q > 0] * np.log(q[q > 0] / base[q > 0])))
    # a discrete base of 400 outcomes is not quite continuous: its exact KL, computed the same way as above
    order = np.argsort(scores)
    cdf = np.cumsum(base[order])
    exact = np.empty(outcomes)
    exact[order] = cdf ** n - np.concatenate([[0.0], cdf[:-1]]) ** n
    exact_kl = float(np.sum(exact * np.log(exact / base)))
    assert kl == pytest.approx(exact_kl, abs=0.02)
    assert exact_kl == pytest.approx(bon_kl(n), abs=0.03)


def test_steps_and_the_choice_of_the_best():
    assert [n_at(k, 16) for k in range(5)] == [1, 2, 4, 8, 16] and steps_for(16) == 4 and steps_for(10) == 4
    assert n_at(4, 10) == 10 and steps_for(1) == 1
    assert pick_best([0.1, 0.9, 0.5, 0.2, 0.2, 0.7], 3) == [1, 5]
    assert bon_kl(1) == 0.0
    with pytest.raises(ValueError):
        bon_kl(0)


def test_a_best_of_n_run_on_tiny_logs_the_frontier(tmp_path, tiny_path):
    cfg = from_dict({"method": "best_of_n", **FAST, "n": 4})
    sink = MemorySink()
    result = run(cfg, sink, tmp_path)
    assert result.step == 2 and not result.stopped
    kl = dict(sink.series("eval/kl"))
    assert kl == pytest.approx({0: 0.0, 1: bon_kl(2), 2: bon_kl(4)})
    assert [s for s, _ in sink.series("eval/best_of")] == [0, 1, 2]
    rewards = dict(sink.series("eval/reward"))
    assert rewards[2] >= rewards[0]  # the best of 4 by the gold reward cannot score below one sample on average
    assert len(sink.samples) == 3 * FAST["eval_prompts"] * FAST["eval_samples"]
    assert math.isfinite(rewards[1])
