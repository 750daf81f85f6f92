"""Proxy vs gold reward of the runs whose training signal differs from the gold one (a reward model, a judge,
another verifier): over-optimisation shows as the two parting."""

from __future__ import annotations

from webapp.compare.core.figures.common import Axis, figure, layout, series_trace
from webapp.compare.core.series import PROXY, REWARD
from webapp.compare.core.view import RunData

TITLE = "Proxy vs gold reward"
NOTE = "runs trained on another signal than the gold one (eval/proxy_reward): solid gold, dashed proxy"


def proxy_figure(runs: list[RunData], axis: Axis, weight: float) -> dict | None:
    """Gold (solid) and proxy (dashed) reward of each run that logged eval/proxy_reward; None if none did."""
    traces = []
    for run in runs:
        if not run.series.get(PROXY) or not axis.has(run):
            continue
        for name, label, dash, kind in ((REWARD, "gold", "solid", "run"), (PROXY, "proxy", "dash", "proxy")):
            if run.series.get(name):
                traces.append(series_trace(run, name, f"{label} reward", axis, weight, faint=False,
                                           name=f"{run.label} ({label})", dash=dash, kind=kind))
    if not traces:
        return None
    return figure(traces, layout(axis.title, "reward"))
