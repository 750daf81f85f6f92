"""The summary table, the samples grid and comparability warnings, on plain data without a database."""

import pytest

from webapp.compare.core.series import Series
from webapp.compare.core.view import RunData, run_summary, summary

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
