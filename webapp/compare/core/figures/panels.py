"""The training panels: loss and the method panels, one line per run, from the trainers' own train/* keys
(series.PANELS names them)."""

from __future__ import annotations

from webapp.compare.core.figures.common import Axis, figure, layout, series_trace
from webapp.compare.core.series import Panel
from webapp.compare.core.view import RunData


def panel_figure(runs: list[RunData], panel: Panel, axis: Axis, weight: float) -> dict | None:
    """A line per run of the first of the panel's keys it logged; None when no run logged any."""
    traces = []
    for run in runs:
        key = next((k for k in panel.keys if run.series.get(k)), None)
        if key is not None and axis.has(run):
            traces.append(series_trace(run, key, key, axis, weight, faint=False))
    if not traces:
        return None
    return figure(traces, layout(axis.title, panel.ytitle))
