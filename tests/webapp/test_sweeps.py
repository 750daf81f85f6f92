"""Equal tuning budgets: the search spaces fit the training configs, and a sweep driven through the
stateless Optuna driver (the study rebuilt from recorded trials each time) finds good settings, prunes
bad trials on their intermediate evaluations, stops at its budget and is reproducible."""

from __future__ import annotations

import math
import random

import pytest

from training.config import ConfigError
from webapp.experiments.sweeps import (
    SEARCH_SPACES,
    Param,
    SweepConfig,
    Trial,
    check_space,
    next_params,
    should_prune,
)


def test_default_spaces_fit_the_methods_configs():
    for method, space in SEARCH_SPACES.items():
        check_space(method, space)
    with pytest.raises(ConfigError):
        check_space("dpo", (Param("beta", 0.01, 500.0),))  # above DPOConfig's bound
    with pytest.raises(ConfigError):
        check_space("dpo", (Param("kl_coef", 0.01, 0.1),))  # not a DPO setting
    with pytest.raises(ConfigError):
        SweepConfig(trials=0)
    with pytest.raises(ConfigError):
        SweepConfig(sampler="grid")


def objective(params: dict, progress: float, rng: random.Random) -> float:
    """A validation reward peaking at lr 3e-5, beta 0.1, rising with training progress."""
    peak = 0.75 - 0.05 * (math.log10(params["learning_rate"]) + 4.5) ** 2 - 0.04 * (math.log10(params["beta"]) + 1) ** 2
    return peak * (0.3 + 0.7 * progress) + rng.gauss(0, 0.005)


def sweep(config: SweepConfig, method: str = "dpo") -> list[Trial]:
    rng = random.Random(1)
    trials: list[Trial] = []
    while (params := next_params(config, method, trials)) is not None:
        trial = Trial(number=len(trials), params=params)
        trials.append(trial)
        for step in (10, 20, 30, 40, 50):
            trial.intermediate[step] = objective(params, step / 50, rng)
            if step < 50 and should_prune(config, method, trials, trial):
                trial.state = "pruned"
                break
        else:
            trial.state, trial.value = "complete", trial.intermediate[50]
    return trials


def test_a_tpe_sweep_finds_good_settings_prunes_and_stops_at_its_budget():
    config = SweepConfig(trials=14, sampler="tpe", startup_trials=4, seed=3)
    trials = sweep(config)
    assert len(trials) == 14
    assert any(t.state == "pruned" for t in trials)
    best = max(t.value for t in trials if t.state == "complete")
    assert best > 0.6
    assert all(1e-6 <= t.params["learning_rate"] <= 1e-3 and 0.01 <= t.params["beta"] <= 1.0 for t in trials)
    # Rebuilt from the rows alone: the same recorded trials give the same next proposal.
    again = sweep(config)
    assert [t.params for t in again] == [t.params for t in trials]


def test_random_sampling_and_no_pruning():
    trials = sweep(SweepConfig(trials=5, sampler="random", prune=False, seed=0))
    assert [t.state for t in trials] == ["complete"] * 5
    assert len({round(t.params["learning_rate"], 12) for t in trials}) == 5
