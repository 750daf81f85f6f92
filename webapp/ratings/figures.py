"""Figure step of the leaderboard: Plotly heatmaps from the plain matrices of `leaderboard.py`."""

from __future__ import annotations

import plotly.graph_objects as go

FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif"


def _heatmap(labels: list[str], z: list[list], text: list[list[str]], title: str, hover: str, axes: bool = True,
             **trace) -> go.Figure:
    size = max(320, 90 + 70 * len(labels))
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, text=text, texttemplate="%{text}", hovertemplate=hover,
                               xgap=2, ygap=2, **trace))
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 14}},
        font={"family": FONT, "size": 12, "color": "#1d2330"}, height=size,
        margin={"l": 10, "r": 10, "t": 40, "b": 10}, paper_bgcolor="white", plot_bgcolor="white",
        xaxis={"side": "bottom", "tickangle": -30, "automargin": True, "title": {"text": "opponent" if axes else ""}},
        yaxis={"autorange": "reversed", "automargin": True, "title": {"text": "model" if axes else ""}},
    )
    return fig


def win_rate_figure(labels: list[str], rate: list[list[float | None]]) -> go.Figure:
    """rate[r][c]: share of points the row took against the column (ties half)."""
    text = [["" if v is None else f"{v:.0%}" for v in row] for row in rate]
    return _heatmap(labels, rate, text, "Win rate of each model (row) against each opponent (column); ties count half",
                    "%{y} vs %{x}: %{z:.1%}<extra></extra>", zmin=0, zmax=1, zmid=0.5,
                    colorscale=[[0, "#c92a2a"], [0.5, "#f5f6f8"], [1, "#2b8a3e"]],
                    colorbar={"tickformat": ".0%", "thickness": 12})


def pair_votes_figure(labels: list[str], votes: list[list[int]]) -> go.Figure:
    z = [[None if r == c else v for c, v in enumerate(row)] for r, row in enumerate(votes)]
    text = [["" if v is None else str(v) for v in row] for row in z]
    top = max([v for row in z for v in row if v is not None], default=0)
    return _heatmap(labels, z, text, "Votes per pair", "%{y} vs %{x}: %{z} votes<extra></extra>", axes=False,
                    zmin=0, zmax=max(top, 1), colorscale=[[0, "#eef2f6"], [1, "#3b5bdb"]], showscale=False)
