"""Reward at equal KL: budgets, the best reward within a budget from each run's front, intervals over seeds."""

import pytest

from webapp.compare.core.equal_kl import budgets, reward_at_equal_kl, reward_within
from webapp.compare.core.series import KL, REWARD, SeriesData
from webapp.compare.core.view import RunData


def run(i, method, seed, points):
    """points: (step, kl, reward)."""
    series = {KL: SeriesData(points=[(s, k, 0.0) for s, k, _ in points]),
              REWARD: SeriesData(points=[(s, r, 0.0) for s, _, r in points])}
    return RunData(id=i, label=f"{method} seed {seed}", group=method, group_label=method.upper(), method=method,
                   seed=seed, series=series)


def test_budgets_are_round_and_span_the_kl_reached():
    assert budgets([0.0, 3.0, 12.0]) == [0.2, 0.5, 1.0, 5.0, 10.0]
    assert budgets([0.0]) == []
    assert budgets([0.3]) == [0.005, 0.01, 0.02, 0.1, 0.2]  # six round budgets thinned to five, ends kept


def test_the_best_reward_within_a_budget():
    front = [(0.0, 0.1), (0.5, 0.3), (2.0, 0.5)]
    assert reward_within(front, 0.4) == 0.1 and reward_within(front, 1.0) == 0.3 and reward_within(front, 9) == 0.5


def test_per_method_mean_and_interval_over_seeds_with_unspent_budgets_marked():
    runs = [run(1, "ppo", 0, [(0, 0.0, 0.2), (10, 1.0, 0.5), (20, 4.0, 0.7)]),
            run(2, "ppo", 1, [(0, 0.0, 0.2), (10, 1.0, 0.6), (20, 4.0, 0.8)]),
            run(3, "dpo", 0, [(0, 0.0, 0.2), (10, 0.5, 0.55), (20, 0.9, 0.6)])]
    table = reward_at_equal_kl(runs)
    assert table["budgets"] == [0.05, 0.1, 0.2, 1.0, 2.0]
    ppo, dpo = table["rows"]
    at_one = table["budgets"].index(1.0)
    assert ppo["cells"][at_one].mean == pytest.approx(0.55) and ppo["cells"][at_one].half is not None
    assert dpo["cells"][at_one].mean == pytest.approx(0.6) and dpo["cells"][at_one].unspent
    assert dpo["texts"][at_one] == "0.600 *" and not ppo["cells"][at_one].unspent
