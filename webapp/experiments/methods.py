"""The methods an experiment compares, each with its label and colour: the one list the form, the API,
the pages, the figures and the reports read. Plain Python (no Django): the comparison core imports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str  # as in training.config and the Run table
    label: str
    color: str  # its lines in every chart (later seeds lighter)


CATALOG = (  # in the order they are shown and created
    Method("sft", "SFT", "#7048e8"),
    Method("dpo", "DPO", "#1c7ed6"),
    Method("ppo", "PPO", "#e8590c"),
    Method("grpo", "GRPO", "#2f9e44"),
    Method("rloo", "RLOO", "#c2255c"),
    Method("best_of_n", "Best-of-N", "#495057"),  # a baseline: no training (training/methods/best_of_n.py)
    Method("reward", "Reward model", "#868e96"),  # trained on pairs; other experiments' PPO/GRPO/RLOO use it
)
COMPARED = ("sft", "dpo", "ppo", "grpo", "rloo")  # the policy-training methods (the ready example's)
METHODS = tuple(m.key for m in CATALOG)
METHOD_LABELS = {m.key: m.label for m in CATALOG}
METHOD_COLORS = {m.key: m.color for m in CATALOG}


def method_label(method: str) -> str:
    """The method's label; an unknown method (an imported report's, say) shows as its key."""
    return METHOD_LABELS.get(method, method)
