"""The KL chart: eval/kl (nats from the reference) of every run, and each method's seeds' mean with a band."""

from __future__ import annotations

from webapp.compare.core.figures.common import Axis, curve_traces, figure, layout
from webapp.compare.core.series import KL
from webapp.compare.core.view import RunData

TITLE = "KL from the reference"
NOTE = "eval/kl: Monte-Carlo KL(policy ‖ reference), nats per sequence"


def kl_figure(runs: list[RunData], axis: Axis, weight: float) -> dict:
    return figure(curve_traces(runs, KL, "KL", axis, weight), layout(axis.title, "eval/kl (nats)"))
