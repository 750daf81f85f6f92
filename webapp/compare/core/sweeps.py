"""Sweeps with equal tuning budgets, on plain data: with the held-out prompts split into a validation
half (trials are selected on it, and Optuna optimises it) and a test half (the winners are reported on
it, so selection does not inflate the result; `webapp.experiments.sweeps.split`), best-of-budget per method with the winners' paired
verdicts on the test half; each method's sensitivity to its hyperparameters; the compute each used."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from webapp.compare.core import verdicts
from webapp.compare.core.stats import fmt
from webapp.experiments.sweeps import scores, split


@dataclass
class TrialRun:
    """A trial: a run of `group` (a method) with its searched `params`."""

    run: int
    group: str
    group_label: str
    label: str
    params: dict
    state: str = "succeeded"
    wall_s: float | None = None
    steps: int | None = None
    tokens: float | None = None


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 pairs or no spread."""
    if len(x) < 3:
        return None

    def ranks(v):
        a = np.asarray(v, dtype=float)
        order = a.argsort()
        r = np.empty(len(a))
        r[order] = np.arange(len(a))
        for value in np.unique(a):  # ties: their mean rank
            tied = a == value
            r[tied] = r[tied].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def sweep_table(trials: list[TrialRun], rows: Iterable[tuple]) -> dict:
    """Best-of-budget per method (the trial best on the validation half, reported on the test half),
    the winners' paired verdicts on the test half, per method and hyperparameter the rank correlation
    of the (log-)value with the validation reward, and the compute used (all trials, pruned included)."""
    rows = list(rows)
    score = scores(rows)
    _, test = split(r[2] for r in rows)
    methods = []
    winners = []
    by_group: dict[str, list[TrialRun]] = {}
    for t in trials:
        by_group.setdefault(t.group, []).append(t)
    for group, members in by_group.items():
        done = [t for t in members if t.state == "succeeded" and score.get(t.run) and score[t.run].validation is not None]
        best = max(done, key=lambda t: score[t.run].validation, default=None)
        if best is not None:
            winners.append(best)
        sensitivity = {}
        for name in sorted({k for t in done for k in t.params}):
            pts = [(t.params[name], score[t.run].validation) for t in done if name in t.params]
            xs = [math.log10(x) if x > 0 else x for x, _ in pts]
            sensitivity[name] = {"spearman": spearman(xs, [y for _, y in pts]),
                                 "spread": (max(y for _, y in pts) - min(y for _, y in pts)) if pts else None}
        methods.append({
            "group": group, "label": members[0].group_label, "trials": len(members), "completed": len(done),
            "pruned": sum(t.state == "pruned" for t in members),
            "best": None if best is None else {"run": best.run, "label": best.label, "params": best.params,
                                               "validation": score[best.run].validation, "test": score[best.run].test},
            "sensitivity": sensitivity,
            "compute": {"wall_s": sum(t.wall_s or 0.0 for t in members), "steps": sum(t.steps or 0 for t in members),
                        "tokens": sum(t.tokens or 0.0 for t in members)},
        })
    test_rows = [r for r in rows if r[2] in test and r[0] in {w.run for w in winners}]
    table = verdicts.from_samples([(w.run, w.label, w.group, w.group_label) for w in winners], test_rows)
    return {"methods": methods, "verdicts": verdicts.table(table), "validation_prompts": len(split(r[2] for r in rows)[0]),
            "test_prompts": len(test)}


def view(table: dict) -> dict:
    """The table as the page shows it: formatted cells per method."""
    rows = []
    for m in table["methods"]:
        best = m["best"]
        sens = ", ".join(f"{name} ρ = {fmt(v['spearman'], 2)}" for name, v in m["sensitivity"].items()
                         if v["spearman"] is not None) or "–"
        rows.append({
            "label": m["label"], "trials": m["trials"], "completed": m["completed"], "pruned": m["pruned"],
            "best": "–" if best is None else best["label"],
            "params": "–" if best is None else ", ".join(f"{k} = {v:.3g}" for k, v in sorted(best["params"].items())),
            "validation": fmt(best["validation"]) if best else "–", "test": fmt(best["test"]) if best else "–",
            "sensitivity": sens, "wall_s": fmt(m["compute"]["wall_s"], 1), "steps": f"{m['compute']['steps']:,}",
        })
    return {**table, "rows": rows}
