"""What the charts share: the x axis (steps, tokens seen or wall time), the layout, a run's line, the
seeds' mean with its band, rounding. Figures are plain dicts (plotly's JSON); user-chosen names go in
HTML-escaped (plotly renders a subset of HTML in trace names); model output never goes in."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from webapp.compare.core.series import interp
from webapp.compare.core.stats import Band, mean_band, smoothed
from webapp.compare.core.view import RunData, groups_of, rgba
from webapp.experiments.methods import METHOD_COLORS

X_MODES = {"step": "step", "tokens": "tokens seen", "wall": "wall time (s)"}


def r6(x: float | None) -> float | None:
    """`x` rounded to 6 significant digits (a JSON half the size)."""
    return None if x is None else float(format(x, ".6g"))


def r6s(xs: Iterable[float | None]) -> list[float | None]:
    return [None if x is None else float(format(x, ".6g")) for x in xs]


class Axis:
    """Maps a run's steps to the chosen x axis: steps, tokens seen or seconds of wall time."""

    def __init__(self, mode: str, runs: list[RunData], chain: bool = False):
        if mode not in X_MODES:
            raise ValueError(f"x must be one of {sorted(X_MODES)}, not {mode!r}")
        self.mode = mode
        self.title = X_MODES[mode]
        # Chained (steps only): a run that starts from another run's model is placed after it, its step 0
        # at that run's last step.
        self.chain = chain and mode == "step" and any(r.offset for r in runs)
        if self.chain:
            self.title = "step (runs that start from another run's model placed after it)"
        self._maps: dict[int, tuple[list[int], list[float]]] = {}
        self._t0: dict[int, float] = {}
        for run in runs if mode != "step" else ():
            self._maps[run.id] = run.clock() if mode == "wall" else run.tokens()
            if mode == "wall":
                walls = [p[2] for data in run.series.values() for p in data.points]
                self._t0[run.id] = min(walls) if walls else 0.0

    def has(self, run: RunData) -> bool:
        return self.mode == "step" or bool(self._maps[run.id][0])

    def of(self, run: RunData, steps: Sequence[int], walls: Sequence[float] | None = None) -> list:
        """x of a run's points: their steps, their own wall time, or tokens seen interpolated at their step."""
        if self.mode == "step":
            return [s + run.offset for s in steps] if self.chain else list(steps)
        if self.mode == "wall" and walls is not None:
            t0 = self._t0[run.id]
            return [round(max(0.0, w - t0), 1) for w in walls]
        xs, ys = self._maps[run.id]
        if not xs:
            return [None] * len(steps)
        # Beyond the last count (a final evaluation after the last training log): the last count.
        return [round(interp(xs, ys, min(max(s, xs[0]), xs[-1])), 1) for s in steps]

    def mean_of(self, runs: list[RunData], steps: Sequence[int]) -> list:
        """x of a seeds' mean: the mean over the runs of each one's x at that step."""
        if self.mode == "step":
            if not self.chain:
                return list(steps)
            shift = sum(r.offset for r in runs) / len(runs) if runs else 0
            return [s + shift for s in steps]
        per_run = [self.of(r, steps) for r in runs if self.has(r)]
        if not per_run:
            return [None] * len(steps)
        return [None if any(v is None for v in col) else round(sum(col) / len(col), 1) for col in zip(*per_run, strict=True)]


def layout(xtitle: str, ytitle: str, **extra) -> dict:
    axis = {"gridcolor": "#eef0f3", "zeroline": False, "linecolor": "#c9ced6", "ticks": "outside",
            "tickcolor": "#c9ced6", "automargin": True}
    out = {
        "height": 360, "margin": {"l": 56, "r": 8, "t": 12, "b": 8},
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12, "color": "#1d2330"},
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff", "hovermode": "closest",
        "xaxis": {**axis, "title": {"text": xtitle}}, "yaxis": {**axis, "title": {"text": ytitle}},
        # On the right: below the plot, a long legend collides with the x axis title.
        "legend": {"x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top", "font": {"size": 11}, "tracegroupgap": 2},
        "hoverlabel": {"namelength": -1},
    }
    out.update(extra)
    return out


def figure(traces: list[dict], layout: dict) -> dict:
    """A plotly figure as a plain dict, ready for JSON. Building a `go.Figure` validates every point
    (and copies it twice), too slow for a page polled every few seconds; the tests validate each
    figure with `as_go`."""
    return {"data": traces, "layout": layout}


def as_go(fig: dict):
    """The figure as a validated `plotly.graph_objects.Figure` (raises on any invalid property)."""
    import plotly.graph_objects as go

    return go.Figure(fig)


def run_trace(run: RunData, xs, ys, raw, steps, ylabel: str, axis: Axis, weight: float, *,
              faint: bool, name: str | None = None, dash: str | None = None, kind: str = "run") -> dict:
    name = name or run.label
    lines = [f"<b>{html.escape(name)}</b>", "step %{customdata[0]}" if axis.mode != "step" or weight > 0 else "step %{x}"]
    if axis.mode == "tokens":
        lines.append("tokens %{x:,.0f}")
    elif axis.mode == "wall":
        lines.append("%{x:.1f} s")
    if weight > 0:
        lines.append(f"{html.escape(ylabel)} %{{y:.4g}} (smoothed; raw %{{customdata[1]:.6g}})")
    else:
        lines.append(f"{html.escape(ylabel)} %{{y:.6g}}")
    trace = {
        "type": "scatter", "mode": "lines+markers" if len(xs) <= 30 else "lines", "x": xs,
        "y": r6s(ys), "name": html.escape(name), "uid": f"{kind}-{run.id}",
        "line": {"color": run.color, "width": 1.5 if faint else 2.2, "dash": dash or run.dash},
        "marker": {"size": 4}, "opacity": 0.55 if faint else 1.0, "legendgroup": f"{kind}-{run.id}",
        "hovertemplate": "<br>".join(lines) + "<extra></extra>", "meta": {"kind": kind, "run": run.id},
    }
    if axis.mode != "step" or weight > 0:
        trace["customdata"] = [list(c) for c in zip(steps, r6s(raw), strict=True)]
    return trace


def series_trace(run: RunData, key: str, ylabel: str, axis: Axis, weight: float, **kwargs) -> dict:
    """A run's line of the series `key`, smoothed by `weight`, on `axis`."""
    steps, ys, raw, walls = smoothed(run.series[key], weight)
    return run_trace(run, axis.of(run, steps, walls), ys, raw, steps, ylabel, axis, weight, **kwargs)


def curve_traces(runs: list[RunData], name: str, ylabel: str, axis: Axis, weight: float) -> list[dict]:
    """One line per run; per group of two or more seeds, their mean with a 95% band."""
    traces, bands = [], []
    for members in groups_of(runs).values():
        with_data = [r for r in members if r.series.get(name) and axis.has(r)]
        curves = {}
        for run in with_data:
            steps, ys, raw, walls = smoothed(run.series[name], weight)
            curves[run.id] = (steps, ys)
            traces.append(run_trace(run, axis.of(run, steps, walls), ys, raw, steps, ylabel, axis, weight,
                                    faint=len(with_data) > 1))
        if len(with_data) > 1:
            b = mean_band(list(curves.values()))
            if b is not None:
                bands.extend(band_traces(with_data, b, ylabel, axis))
    return bands + traces


def band_traces(members: list[RunData], b: Band, ylabel: str, axis: Axis) -> list[dict]:
    first = members[0]
    color = METHOD_COLORS.get(first.method, first.color)
    xs = axis.mean_of(members, b.steps)
    group = f"mean-{first.group}"
    label = html.escape(f"{first.group_label} mean ± 95% CI ({b.n} seeds)")
    hover = (f"<b>{label}</b><br>step %{{customdata[0]}}<br>{html.escape(ylabel)} %{{y:.4g}}"
             f"<br>95% CI %{{customdata[1]:.4g}} to %{{customdata[2]:.4g}}<extra></extra>")
    return [
        {"type": "scatter", "mode": "lines", "x": xs + xs[::-1], "y": r6s(b.hi + b.lo[::-1]), "fill": "toself",
         "fillcolor": rgba(color, 0.16), "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False,
         "legendgroup": group, "uid": f"band-{first.group}", "meta": {"kind": "band", "group": first.group}},
        {"type": "scatter", "mode": "lines", "x": xs, "y": r6s(b.mean), "name": label,
         "line": {"color": color, "width": 3, "dash": first.dash}, "legendgroup": group,
         "uid": f"mean-{first.group}", "meta": {"kind": "mean", "group": first.group},
         "customdata": [list(c) for c in zip(b.steps, r6s(b.lo), r6s(b.hi), strict=True)],
         "hovertemplate": hover},
    ]
