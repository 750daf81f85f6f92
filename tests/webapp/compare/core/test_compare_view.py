"""The summary table, the samples grid and comparability warnings, on plain data without a database."""

import pytest

from webapp.compare.core.series import Series
from webapp.compare.core.view import (
    RunData,
    Setup,
    comparability_warnings,
    grid_plan,
    run_summary,
    samples_grid,
    style_runs,
    summary,
)

# --- the summary table --------------------------------------------------------------------------------


def run(run_id: int, method: str, seed: int, reward, kl, tokens=None, seconds_per_step=2.0) -> RunData:
    """A run with eval/reward and eval/kl at steps 0, 50, 100 (and tokens, if given)."""
    series = {
        "eval/reward": Series().extend((s, r, 1000 + s * seconds_per_step) for s, r in zip((0, 50, 100), reward, strict=True)).snapshot(),
        "eval/kl": Series().extend((s, k, 1000 + s * seconds_per_step) for s, k in zip((0, 50, 100), kl, strict=True)).snapshot(),
    }
    if tokens is not None:
        series["train/num_tokens"] = Series().extend((s, s * tokens, 1000 + s * seconds_per_step)
                                                     for s in range(1, 101)).snapshot()
    return RunData(id=run_id, label=f"{method} seed {seed}", group=method, group_label=method.upper(), method=method,
                   seed=seed, series=series)


def test_run_summary():
    s = run_summary(run(1, "dpo", 0, reward=(0.2, 0.4, 0.5), kl=(0.0, 1.0, 1.5), tokens=100))
    assert s.reward == 0.5 and s.kl == 1.5 and s.per_nat == pytest.approx(0.2)
    assert s.wall_s == pytest.approx(200.0) and s.steps_per_s == pytest.approx(0.5)
    assert s.tokens == 10_000 and s.last_step == 100


def test_summary_per_method_mean_and_ci_over_seeds():
    runs = [run(1, "dpo", 0, (0.2, 0.4, 0.5), (0, 1, 1.5)), run(2, "dpo", 1, (0.2, 0.5, 0.6), (0, 1, 2.0)),
            run(3, "dpo", 2, (0.2, 0.5, 0.7), (0, 1, 2.5)), run(4, "ppo", 0, (0.2, 0.6, 0.8), (0, 2, 3.0))]
    table = summary(runs)
    assert [c["key"] for c in table["columns"]][:3] == ["reward", "kl", "per_nat"]
    dpo, ppo = table["groups"]
    assert (dpo["label"], dpo["runs"], ppo["runs"]) == ("DPO", 3, 1)
    # final rewards 0.5, 0.6, 0.7: mean 0.6, sd 0.1, half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert dpo["numbers"]["reward"]["mean"] == pytest.approx(0.6)
    assert dpo["numbers"]["reward"]["half"] == pytest.approx(0.248414, abs=1e-6)
    assert dpo["cells"][0] == "0.600 ± 0.248"
    # per nat: 0.3/1.5, 0.4/2.0, 0.5/2.5 = 0.2 each: no spread
    assert dpo["numbers"]["per_nat"]["mean"] == pytest.approx(0.2) and dpo["numbers"]["per_nat"]["half"] == pytest.approx(0)
    assert ppo["cells"][0] == "0.800" and ppo["numbers"]["reward"]["half"] is None  # one seed: no interval
    assert ppo["numbers"]["tokens"]["mean"] is None and ppo["cells"][4] == "–"
    assert [r["run"] for r in table["runs"]] == [1, 2, 3, 4]


# --- the samples grid ---------------------------------------------------------------------------------


def grid_runs() -> list[RunData]:
    return style_runs([RunData(id=1, label="SFT seed 0", group="sft", group_label="SFT", method="sft"),
                       RunData(id=2, label="DPO seed 0", group="dpo", group_label="DPO", method="dpo", depends_on=True),
                       RunData(id=3, label="GRPO seed 0", group="grpo", group_label="GRPO", method="grpo", url="/r/3")])


def test_grid_plan_shows_each_runs_latest_evaluation_up_to_the_step():
    runs = grid_runs()
    steps_of = {1: [0, 10, 20], 2: [0, 10], 3: [0, 5]}
    plan = grid_plan(runs, steps_of)
    assert (plan.steps, plan.chosen, plan.shown, plan.base.id) == ([0, 5, 10, 20], 20, {1: 20, 2: 10, 3: 5}, 1)
    plan = grid_plan(runs, steps_of, step=7)  # no evaluation at 7: the latest before it
    assert (plan.chosen, plan.shown) == (5, {1: 0, 2: 0, 3: 5})
    assert sorted(plan.wanted()) == [(1, 0), (1, 0), (2, 0), (3, 5)]
    assert grid_plan(runs, {}).chosen is None and samples_grid(grid_plan(runs, {}), runs, [])["columns"] == []


def test_the_base_column_comes_from_a_run_that_starts_from_the_base_model():
    runs = grid_runs()
    assert grid_plan(runs, {2: [0], 3: [0]}).base.id == 3  # not the DPO run: it starts from the SFT model
    assert grid_plan(runs[1:2], {2: [0]}).base.id == 2  # none does: the one there is


def test_samples_grid_lines_up_completions_by_prompt():
    runs = grid_runs()
    plan = grid_plan(runs, {1: [0, 10], 2: [0, 10], 3: [0]})
    rows = [(1, 0, 0, "p0", "base a", 0.1), (1, 10, 0, "p0", "sft a", 0.5), (2, 10, 0, "p0", "dpo a", 0.7),
            (3, 0, 0, "p0", "grpo a", 0.2), (1, 10, 1, "p1", "<b>sft</b>", 0.4), (1, 10, 1, "p1", "sft b", 0.3)]
    grid = samples_grid(plan, runs, rows)
    assert [c["key"] for c in grid["columns"]] == ["base", 1, 2, 3]
    assert [c["note"] for c in grid["columns"]] == ["step 0 of SFT seed 0", "step 10", "step 10",
                                                     "step 0 (latest by then)"]
    assert "url" not in grid["columns"][1] and grid["columns"][3]["url"] == "/r/3"
    p0, p1 = grid["prompts"]
    assert [[s["completion"] for s in cell] for cell in p0["cells"]] == [["base a"], ["sft a"], ["dpo a"], ["grpo a"]]
    assert [[s["completion"] for s in cell] for cell in p1["cells"]] == [[], ["<b>sft</b>", "sft b"], [], []]


# --- comparability ------------------------------------------------------------------------------------


def setup(run: int, experiment: int, **overrides) -> Setup:
    values = {"experiment_name": f"exp{experiment}", "task": "arithmetic", "eval_prompts": "16", "model": "tiny",
              "generation": "4 samples per prompt, 32 new tokens"}
    return Setup(run=run, experiment=experiment, **(values | overrides))


def test_one_experiment_is_always_comparable():
    assert comparability_warnings([setup(1, 1), setup(2, 1, task="sentiment")], {}) == []


def test_comparability_warnings_name_what_differs():
    same = [setup(1, 1), setup(2, 2)]
    assert comparability_warnings(same, {}) == []
    warnings = comparability_warnings([setup(1, 1), setup(2, 2, task="sentiment", model="demo")], {})
    assert warnings == [
        "The gold rewards differ (different tasks): exp1 (arithmetic) vs exp2 (sentiment). "
        "Rewards are not on one scale.",
        "The eval prompt sets differ: exp1 (16 prompts of arithmetic) vs exp2 (16 prompts of sentiment). "
        "Rewards and samples are not of the same prompts.",
        "The base models differ: exp1 (tiny) vs exp2 (demo). KL is measured from different references."]
    prompts = {1: {(0, "What is 2 + 2?")}, 2: {(0, "What is 3 + 3?")}}
    assert comparability_warnings(same, prompts) == [
        "The eval prompt sets differ: exp1 vs exp2. Rewards and samples are not of the same prompts."]
