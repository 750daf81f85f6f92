"""The token-length histogram of a dataset's preview: an info step (plain numbers, tested without Plotly)
and a figure step (a Plotly figure as JSON)."""

from __future__ import annotations


def length_info(lengths: list[int], limit: int, bins: int = 30) -> dict:
    """Counts per length bin, how many rows exceed `limit`, and summary numbers."""
    if not lengths:
        return {"edges": [], "counts": [], "limit": limit, "too_long": 0, "n": 0, "max": 0, "median": 0}
    top = max(lengths)
    width = max(1, -(-(top + 1) // bins))  # ceil: every length falls in a bin
    counts = [0] * (top // width + 1)
    for n in lengths:
        counts[n // width] += 1
    ordered = sorted(lengths)
    return {"edges": [i * width for i in range(len(counts) + 1)], "counts": counts, "limit": limit,
            "too_long": sum(n > limit for n in lengths), "n": len(lengths), "max": top,
            "median": ordered[len(ordered) // 2]}


def length_figure(info: dict) -> str:
    import plotly.graph_objects as go

    edges = info["edges"]
    fig = go.Figure(go.Bar(x=[(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)], y=info["counts"],
                           width=[b - a for a, b in zip(edges, edges[1:], strict=False)],
                           marker_color="#3b5bdb", name="rows"))
    fig.add_vline(x=info["limit"], line_dash="dash", line_color="#c92a2a",
                  annotation_text=f"limit {info['limit']}: {info['too_long']} rows over")
    fig.update_layout(xaxis_title="tokens (chat template applied, prompt + completion)", yaxis_title="rows",
                      margin={"l": 50, "r": 20, "t": 30, "b": 50}, height=320, bargap=0.05)
    return fig.to_json()
