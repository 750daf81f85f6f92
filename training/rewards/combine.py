"""Signals made of other signals: the task's own gold reward, and a weighted sum."""

from __future__ import annotations

from dataclasses import dataclass

from training.fields import opt
from training.rewards.base import Signal, SignalEnv, SignalError


@dataclass
class TaskGold(Signal):
    kind = "task"
    description = "The built-in task's own gold reward (the default training and gold signal)."

    def setup(self, env: SignalEnv) -> None:
        if env.task is None:
            raise SignalError("kind", "the task's gold reward needs a task")
        self._fn = env.task.reward_fn()

    def __call__(self, completions, **columns):
        return self._fn(completions, **columns)


@dataclass
class WeightedSum(Signal):
    kind = "weighted_sum"
    description = "sum(weight_i * signal_i) of other signals, e.g. 0.8 x numeric_match + 0.2 x format."
    signals: list = opt([], "The signals (specs: a kind, or an object with kind and parameters).")
    weights: list = opt([], "One weight per signal; empty means equal weights summing to 1.")

    def __post_init__(self) -> None:
        super().__post_init__()
        from training.rewards.registry import build

        if not self.signals:
            raise SignalError("signals", "name at least one signal")
        if self.weights and len(self.weights) != len(self.signals):
            raise SignalError("weights", f"has {len(self.weights)} weights for {len(self.signals)} signals")
        if any(isinstance(w, bool) or not isinstance(w, int | float) for w in self.weights):
            raise SignalError("weights", "must be numbers")
        self._parts = []
        for i, spec in enumerate(self.signals):
            try:
                self._parts.append(build(spec))
            except SignalError as e:
                raise SignalError("signals", f"signal {i}: {e}") from e
        self._weights = [float(w) for w in self.weights] or [1.0 / len(self.signals)] * len(self.signals)

    def setup(self, env: SignalEnv) -> None:
        for part in self._parts:
            part.setup(env)

    def __call__(self, completions, **columns):
        total = [0.0] * len(completions)
        for w, part in zip(self._weights, self._parts, strict=True):
            for i, v in enumerate(part(completions, **columns)):
                total[i] += w * v
        return total
