"""The plot step: one module per chart, each a function from `RunData` (the info step's output) to a
plotly figure as a plain dict. `build_figures` gives every chart of the comparison page, in page order;
the exported reports draw the same."""

from __future__ import annotations

from webapp.compare.core.figures import frontier, gao, kl, proxy, reward
from webapp.compare.core.figures.common import X_MODES, Axis, as_go, layout
from webapp.compare.core.figures.frontier import frontier_figure, frontier_points
from webapp.compare.core.figures.gao import gao_figure
from webapp.compare.core.figures.kl import kl_figure
from webapp.compare.core.figures.panels import panel_figure
from webapp.compare.core.figures.proxy import proxy_figure
from webapp.compare.core.figures.reward import reward_figure
from webapp.compare.core.series import LR_PANEL, PANELS
from webapp.compare.core.view import RunData

__all__ = ["CHARTS", "WIDE", "X_MODES", "as_go", "build_figures", "frontier_points", "run_figures"]

WIDE = {"reward", "kl", "frontier"}  # charts drawn across the page (more runs, more legend)
CHARTS = tuple((module.__name__.rsplit(".", 1)[1], module.TITLE, module.NOTE)  # (id, title, note), page order
               for module in (reward, kl, frontier, proxy, gao))


def build_figures(runs: list[RunData], x: str = "step", smoothing: float = 0.0, chain: bool = False) -> list[dict]:
    """Every chart of the comparison page as {id, title, note, figure}; charts without data are left out.
    The reward and KL curves, loss and panels follow the x axis (`step`, `tokens`, `wall`) and the EMA
    `smoothing`; the frontier shows the evaluations as logged. `chain`: on the step axis, runs that start
    from another run's model are placed after it (RunData.offset)."""
    axis = Axis(x, runs, chain=chain)
    weight = min(max(float(smoothing), 0.0), 0.99)
    out = []
    notes = {cid: (title, note) for cid, title, note in CHARTS}
    missing_x = [r.label for r in runs if not axis.has(r)]
    for cid, fig in (("reward", reward_figure(runs, axis, weight)), ("kl", kl_figure(runs, axis, weight)),
                     ("frontier", frontier_figure(runs)), ("proxy", proxy_figure(runs, axis, weight)), ("gao", gao_figure(runs))):
        if fig is not None and (cid in WIDE or fig["data"]):
            title, note = notes[cid]
            out.append({"id": cid, "title": title, "note": note, "figure": fig, "wide": cid in WIDE})
    for panel in PANELS:
        fig = panel_figure(runs, panel, axis, weight)
        if fig is not None:
            out.append({"id": panel.id, "title": panel.title, "note": " / ".join(panel.keys), "figure": fig,
                        "wide": False})
    for item in out:
        if not item["figure"]["data"]:
            item["figure"]["layout"]["annotations"] = [{
                "text": "No evaluations yet", "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5,
                "y": 0.5, "font": {"size": 14, "color": "#98a2b3"}}]
    if missing_x:
        for item in out:
            if item["id"] != "frontier":
                item["missing_x"] = missing_x
    return out


def run_figures(runs: list[RunData]) -> list[dict]:
    """A run's own page: its reward, KL, training loss and learning rate, always these four (a chart
    without data yet says so), by step and unsmoothed."""
    axis = Axis("step", runs)
    loss = next(p for p in PANELS if p.id == "loss")
    items = [("reward", "Gold reward", "eval/reward at each evaluation", reward_figure(runs, axis, 0.0)),
             ("kl", "KL from the reference", "eval/kl (nats per sequence)", kl_figure(runs, axis, 0.0)),
             ("loss", loss.title, " / ".join(loss.keys), panel_figure(runs, loss, axis, 0.0)),
             ("learning_rate", LR_PANEL.title, " / ".join(LR_PANEL.keys), panel_figure(runs, LR_PANEL, axis, 0.0))]
    out = []
    for cid, title, note, fig in items:
        if fig is None or not fig["data"]:
            ytitle = {"reward": "eval/reward (gold)", "kl": "eval/kl (nats)"}.get(cid, note)
            fig = {"data": [], "layout": {**layout(axis.title, ytitle), "annotations": [{
                "text": "No data yet", "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                "font": {"size": 14, "color": "#98a2b3"}}]}}
        fig["layout"]["height"] = 280
        fig["layout"]["showlegend"] = False  # one run: its label is the page's title
        out.append({"id": cid, "title": title, "note": note, "figure": fig, "wide": False})
    return out
