"""The reward-vs-KL frontier: every evaluation of every run as a point, and each method's Pareto front."""

from __future__ import annotations

import html

from webapp.compare.core.figures.common import figure, layout, r6s
from webapp.compare.core.series import KL, REWARD, interp
from webapp.compare.core.stats import pareto_front
from webapp.compare.core.view import RunData, groups_of
from webapp.experiments.methods import METHOD_COLORS

TITLE = "Reward vs KL frontier"
NOTE = "every evaluation of every run; dotted: each method's Pareto front"


def frontier_points(run: RunData) -> list[tuple[float, float, int]]:
    """(kl, reward, step) of each evaluation of a run (KL interpolated if its series was downsampled
    differently from the reward's)."""
    reward, kl = run.series.get(REWARD), run.series.get(KL)
    if not reward or not kl:
        return []
    steps = [p[0] for p in kl.points]
    values = [p[1] for p in kl.points]
    out = []
    for step, r, _ in reward.points:
        k = interp(steps, values, step)
        if k is not None:
            out.append((k, r, step))
    return out


def frontier_figure(runs: list[RunData]) -> dict:
    """Every evaluation of every run as a point (x eval/kl, y eval/reward), joined per run in step
    order, and each group's Pareto front (highest reward for at most that KL) as a staircase."""
    traces, fronts = [], []
    for members in groups_of(runs).values():
        group_points = []
        for run in members:
            pts = frontier_points(run)
            if not pts:
                continue
            group_points.extend(pts)
            traces.append({
                "type": "scatter", "mode": "lines+markers", "x": r6s(p[0] for p in pts), "y": r6s(p[1] for p in pts),
                "name": html.escape(run.label), "uid": f"run-{run.id}", "meta": {"kind": "run", "run": run.id},
                "line": {"color": run.color, "width": 1.2, "dash": run.dash}, "marker": {"size": 5},
                "opacity": 0.7, "customdata": [p[2] for p in pts],
                "hovertemplate": f"<b>{html.escape(run.label)}</b><br>step %{{customdata}}<br>KL %{{x:.4g}} nats"
                                 "<br>reward %{y:.4g}<extra></extra>"})
        front = pareto_front(group_points)
        if front:
            first = members[0]
            color = METHOD_COLORS.get(first.method, first.color)
            label = html.escape(f"{first.group_label}: Pareto front")
            fronts.append({
                "type": "scatter", "mode": "lines+markers", "x": r6s(p[0] for p in front),
                "y": r6s(p[1] for p in front), "line": {"shape": "hv", "color": color, "width": 3, "dash": "dot"},
                "marker": {"size": 9, "symbol": "diamond-open", "line": {"width": 2}},
                "name": label, "uid": f"front-{first.group}", "meta": {"kind": "front", "group": first.group},
                "customdata": [p[2] for p in front],
                "hovertemplate": f"<b>{label}</b><br>step %{{customdata}}<br>KL %{{x:.4g}} nats<br>reward %{{y:.4g}}"
                                 "<extra></extra>"})
    return figure(fronts + traces, layout("eval/kl (nats from the reference)", "eval/reward (gold)"))
