"""Gold reward gained against sqrt(KL), with each method's fit of the Gao et al. (2022) form: where the
fit turns down, more optimisation buys less gold reward."""

from __future__ import annotations

import html

from webapp.compare.core.figures.common import figure, layout, r6s
from webapp.compare.core.overopt import FORMS, group_fits
from webapp.compare.core.view import RunData
from webapp.experiments.methods import METHOD_COLORS

TITLE = "Gold reward gained vs √KL"
NOTE = "Gao et al. (2022) fits: RL d(α − β log d), best-of-N d(α − β d), d = √KL; gain over each run's step 0"
GRID = 40


def gao_info(runs: list[RunData]) -> list[dict]:
    """The info step: per method its points (√KL, gain, step), and its fit drawn on a grid of d."""
    out = []
    for item in group_fits(runs):
        fit = item["fit"]
        top = max((p[0] for p in item["points"]), default=0.0)
        curve = []
        if fit is not None and top > 0:
            xs = [top * i / GRID for i in range(GRID + 1)]
            curve = [(x, fit(x)) for x in xs]
        out.append({**item, "curve": curve})
    return out


def gao_figure(runs: list[RunData]) -> dict | None:
    """None when no method has a fit (no run with a step-0 evaluation and three evaluations with KL > 0)."""
    info = [i for i in gao_info(runs) if i["fit"] is not None]
    if not info:
        return None
    traces = []
    for item in info:
        color = METHOD_COLORS.get(item["method"], "#495057")
        label = html.escape(item["label"])
        fit = item["fit"]
        pts = item["points"]
        traces.append({
            "type": "scatter", "mode": "markers", "x": r6s(p[0] for p in pts), "y": r6s(p[1] for p in pts),
            "name": f"{label}: evaluations", "legendgroup": f"gao-{item['group']}", "uid": f"gao-pts-{item['group']}",
            "marker": {"size": 5, "color": color, "opacity": 0.6}, "customdata": [p[2] for p in pts],
            "meta": {"kind": "gao-points", "group": item["group"]},
            "hovertemplate": f"<b>{label}</b><br>step %{{customdata}}<br>√KL %{{x:.3g}}<br>gain %{{y:.4g}}<extra></extra>"})
        name = f"{label}: {FORMS[fit.form]}, α={fit.alpha:.3g}, β={fit.beta:.3g}"
        traces.append({
            "type": "scatter", "mode": "lines", "x": r6s(c[0] for c in item["curve"]), "y": r6s(c[1] for c in item["curve"]),
            "name": name, "legendgroup": f"gao-{item['group']}", "uid": f"gao-fit-{item['group']}",
            "line": {"color": color, "width": 2.5, "dash": "dash" if fit.form == "bon" else "solid"},
            "meta": {"kind": "gao-fit", "group": item["group"], "form": fit.form}, "hoverinfo": "skip"})
    return figure(traces, layout("√KL (√nats)", "gold reward gained since step 0"))
