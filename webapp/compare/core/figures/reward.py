"""The gold reward chart: eval/reward of every run, and each method's seeds' mean with a 95% band."""

from __future__ import annotations

from webapp.compare.core.figures.common import Axis, curve_traces, figure, layout
from webapp.compare.core.series import REWARD
from webapp.compare.core.view import RunData

TITLE = "Gold reward"
NOTE = "eval/reward on the held-out prompts; seeds' mean with a 95% band"


def reward_figure(runs: list[RunData], axis: Axis, weight: float) -> dict:
    return figure(curve_traces(runs, REWARD, "reward", axis, weight), layout(axis.title, "eval/reward (gold)"))
