"""Every run its own colour, also across experiments (the method still reads from the hue); the chained
step axis places a run that starts from another run's model after it."""

from __future__ import annotations

from webapp.compare.core.figures import build_figures
from webapp.compare.core.series import SeriesData
from webapp.compare.core.view import RunData, style_runs
from webapp.experiments.methods import METHOD_COLORS


def runs_across(experiments: int, seeds: int) -> list[RunData]:
    out, k = [], 0
    for e in range(experiments):
        for method in ("sft", "dpo", "grpo"):
            for seed in range(seeds):
                k += 1
                out.append(RunData(id=k, label=f"e{e} {method} {seed}", group=f"{e}:{method}", group_label=method,
                                   method=method, seed=seed, experiment=e))
    return out


def test_colours_are_distinct_for_every_run_across_experiments():
    for experiments, seeds in ((1, 1), (1, 5), (3, 2), (7, 3), (9, 5)):
        runs = style_runs(runs_across(experiments, seeds))
        colours = [r.color for r in runs]
        assert len(set(colours)) == len(colours), (experiments, seeds)
    one = style_runs(runs_across(1, 1))
    assert [r.color for r in one] == [METHOD_COLORS[m] for m in ("sft", "dpo", "grpo")]  # unchanged


def test_first_experiment_keeps_the_method_colours_others_turn_and_dash():
    runs = style_runs(runs_across(2, 1))
    first, second = runs[:3], runs[3:]
    assert [r.color for r in first] == [METHOD_COLORS[m] for m in ("sft", "dpo", "grpo")]
    assert all(a.color != b.color for a, b in zip(first, second, strict=True))
    assert {r.dash for r in first} == {"solid"} and {r.dash for r in second} == {"dash"}


def series(*points) -> SeriesData:
    return SeriesData(points=[(s, v, 1000.0 + s) for s, v in points])


def test_chained_step_axis_places_dependent_runs_after_their_start():
    sft = RunData(id=1, label="SFT", group="sft", group_label="SFT", method="sft",
                  series={"eval/reward": series((0, 0.1), (300, 0.6))})
    dpo = RunData(id=2, label="DPO", group="dpo", group_label="DPO", method="dpo", depends_on=True, offset=300,
                  series={"eval/reward": series((0, 0.6), (100, 0.7))})
    runs = style_runs([sft, dpo])
    plain = {t["meta"]["run"]: t["x"] for t in build_figures(runs)[0]["figure"]["data"]
             if t.get("meta", {}).get("kind") == "run"}
    chained_fig = build_figures(runs, chain=True)[0]["figure"]
    chained = {t["meta"]["run"]: t["x"] for t in chained_fig["data"] if t.get("meta", {}).get("kind") == "run"}
    assert plain == {1: [0, 300], 2: [0, 100]}
    assert chained == {1: [0, 300], 2: [300, 400]}
    assert "placed after" in chained_fig["layout"]["xaxis"]["title"]["text"]
    # other axes ignore it
    tokens = build_figures(runs, x="wall", chain=True)[0]["figure"]["layout"]["xaxis"]["title"]["text"]
    assert "placed after" not in tokens
