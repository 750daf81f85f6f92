"""Reward at equal KL: from each run's reward-vs-KL front, the highest gold reward it reached within
a KL budget, at budgets every method is measured at; per method the mean over seeds with a 95% t
interval. A method that spends little KL is compared at the budgets it left unused too (its best
within them), and marked so."""

from __future__ import annotations

import math
from dataclasses import dataclass

from webapp.compare.core.figures.frontier import frontier_points
from webapp.compare.core.stats import mean_ci, pareto_front
from webapp.compare.core.view import RunData, group_color, groups_of

LADDER = (1, 2, 5)  # budgets 0.01, 0.02, 0.05, 0.1, ... nats
MAX_BUDGETS = 5


def reward_within(front: list[tuple], budget: float) -> float | None:
    """The best reward among front points (kl, reward, ...) with KL at most `budget` (None if none)."""
    best = None
    for p in front:
        if p[0] <= budget and (best is None or p[1] > best):
            best = p[1]
    return best


def budgets(max_kls: list[float]) -> list[float]:
    """Round budgets (1-2-5 in nats) from 1% of the largest KL any run reached up to it, at most MAX_BUDGETS."""
    top = max((k for k in max_kls if k > 0), default=0.0)
    if top <= 0:
        return []
    out, scale = [], 10.0 ** math.floor(math.log10(top / 100))
    while scale <= top * 10:
        for m in LADDER:
            b = float(f"{m * scale:.6g}")
            if top / 100 <= b <= top:
                out.append(b)
        scale *= 10
    if len(out) > MAX_BUDGETS:
        last = len(out) - 1
        out = [out[round(i * last / (MAX_BUDGETS - 1))] for i in range(MAX_BUDGETS)]
    return out


@dataclass(frozen=True)
class Cell:
    mean: float | None
    half: float | None
    n: int
    unspent: bool  # some seed's largest KL is below the budget: its best within it is its best overall

    def text(self) -> str:
        if self.mean is None:
            return "–"
        shown = f"{self.mean:.3f}" if self.half is None else f"{self.mean:.3f} ± {self.half:.3f}"
        return shown + (" *" if self.unspent else "")


def reward_at_equal_kl(runs: list[RunData]) -> dict:
    """{"budgets": [...], "rows": [{group, label, color, cells: [Cell...], texts: [...]}]}; per run, its
    Pareto front over its evaluations; per method and budget, the mean and 95% interval over seeds."""
    fronts = {run.id: pareto_front(frontier_points(run)) for run in runs}
    max_kl = {rid: max((p[0] for p in f), default=0.0) for rid, f in fronts.items()}
    grid = budgets([max_kl[rid] for rid, f in fronts.items() if f])
    rows = []
    for group, members in groups_of(runs).items():
        members = [r for r in members if fronts[r.id]]
        if not members or not grid:
            continue
        cells = []
        for b in grid:
            est = mean_ci(reward_within(fronts[r.id], b) for r in members)
            cells.append(Cell(est.mean, est.half, est.n, any(max_kl[r.id] < b for r in members)))
        rows.append({"group": group, "label": members[0].group_label, "color": group_color(runs, group),
                     "cells": cells, "texts": [c.text() for c in cells]})
    return {"budgets": grid, "rows": rows}


def as_json(table: dict) -> dict:
    return {"budgets": table["budgets"],
            "rows": [{"group": r["group"], "label": r["label"],
                      "cells": [{"mean": c.mean, "half": c.half, "n": c.n, "unspent": c.unspent} for c in r["cells"]]}
                     for r in table["rows"]]}
