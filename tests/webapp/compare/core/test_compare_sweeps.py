"""Sweep selection and reporting on disjoint prompt halves, sensitivity and compute."""

import pytest

from webapp.compare.core.sweeps import TrialRun, spearman, sweep_table
from webapp.experiments.sweeps import scores, split


def test_split_alternates_and_is_disjoint():
    val, test = split(range(10))
    assert val == {0, 2, 4, 6, 8} and test == {1, 3, 5, 7, 9} and not val & test


def rows_for(run, rewards_by_prompt, step=50):
    return [(run, step, p, r) for p, r in rewards_by_prompt.items()]


def test_the_winner_is_chosen_on_validation_and_reported_on_test():
    # Trial 1 is lucky on the validation prompts (even ids) only; trial 2 is better on both halves.
    prompts = range(20)
    rows = []
    rows += rows_for(1, {p: (0.9 if p % 2 == 0 else 0.3) for p in prompts})
    rows += rows_for(2, {p: (0.6 if p % 2 == 0 else 0.6) for p in prompts})
    rows += rows_for(3, {p: 0.2 + 0.01 * p for p in prompts})
    rows += rows_for(4, {p: 0.25 + 0.01 * p for p in prompts})
    rows += [(1, 10, p, 0.5) for p in prompts]
    s = scores(rows)
    assert s[1].validation == pytest.approx(0.9) and s[1].test == pytest.approx(0.3)
    assert s[1].intermediate == pytest.approx({10: 0.5, 50: 0.9})
    trials = [TrialRun(1, "ppo", "PPO", "PPO trial 0", {"learning_rate": 1e-4}, wall_s=10, steps=50),
              TrialRun(2, "ppo", "PPO", "PPO trial 1", {"learning_rate": 1e-5}, wall_s=12, steps=50),
              TrialRun(5, "ppo", "PPO", "PPO trial 2", {"learning_rate": 1e-3}, state="pruned", wall_s=3, steps=10),
              TrialRun(3, "dpo", "DPO", "DPO trial 0", {"beta": 0.1}),
              TrialRun(4, "dpo", "DPO", "DPO trial 1", {"beta": 0.2})]
    table = sweep_table(trials, rows)
    ppo, dpo = table["methods"]
    # Selection on validation picks trial 1; its reported (test) score is the honest 0.3, not 0.9.
    assert ppo["best"]["run"] == 1 and ppo["best"]["test"] == pytest.approx(0.3)
    assert ppo["trials"] == 3 and ppo["pruned"] == 1 and ppo["compute"] == {"wall_s": 25, "steps": 110, "tokens": 0}
    assert dpo["best"]["run"] == 4
    assert table["validation_prompts"] == table["test_prompts"] == 10
    (row,) = table["verdicts"]["rows"]  # the winners compared on the test half only: DPO 0.35 vs PPO 0.3
    assert row["pair"] == "DPO − PPO"


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
