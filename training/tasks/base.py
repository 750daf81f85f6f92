"""What every task provides: SFT demonstrations, DPO pairs, RL prompts, a held-out eval set and a
gold reward. Rows use TRL's conversational format, so chat templates apply the same everywhere."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RewardFn = Callable[..., list[float]]  # (completions, **columns) -> list[float], as TRL's reward functions


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def text_of(completion: Any) -> str:
    """Completions arrive as strings (our evaluation) or as message lists (TRL's conversational trainers)."""
    if isinstance(completion, list):
        return "".join(m["content"] for m in completion if m.get("role") == "assistant")
    return str(completion)


def prompt_text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


@dataclass
class Example:
    """One prompt of a task with everything any method needs of it."""

    prompt: str
    reference: str  # the ideal completion (SFT target, DPO chosen)
    rejected: str  # a worse completion (DPO rejected)
    columns: dict[str, Any] = field(default_factory=dict)  # passed to reward functions (e.g. answer)
    messages: list[dict[str, str]] | None = None  # a conversation to continue, instead of one user turn
    weight: float = 1.0  # how much the pair counts in DPO and reward-model training (a dataset's weight column)

    def chat(self) -> list[dict[str, str]]:
        """The prompt as the model sees it: the conversation, or the prompt as one user message."""
        return self.messages if self.messages is not None else user(self.prompt)


class Task:
    """A task: examples split into train and a fixed held-out eval set, plus a gold reward."""

    name: str = ""
    description: str = ""
    reward_fns: tuple[RewardFn, ...] = ()

    def examples(self) -> list[Example]:
        raise NotImplementedError

    eval_fraction: float = 0.2

    def split(self) -> tuple[list[Example], list[Example]]:
        """Train and eval examples, disjoint by prompt. The split depends on the task alone, never on
        the run's seed, so every run of an experiment is evaluated on the same prompts (in the same order)."""
        ranked = sorted(self.examples(), key=lambda ex: _bucket(ex.prompt))
        n_eval = max(1, math.ceil(self.eval_fraction * len(ranked)))
        held, train = ranked[:n_eval], ranked[n_eval:]
        return sorted(train, key=lambda ex: ex.prompt), held

    def train_examples(self) -> list[Example]:
        return self.split()[0]

    def eval_examples(self, n: int) -> list[Example]:
        return self.split()[1][:n]

    def sft_rows(self) -> list[dict]:
        return [{"prompt": ex.chat(), "completion": assistant(ex.reference)} for ex in self.train_examples()]

    def dpo_rows(self) -> list[dict]:
        """Preference rows; with a `weight` column only when some pair's weight is not 1 (the trainers read it),
        so unweighted data trains exactly as it would without one."""
        pairs = [ex for ex in self.train_examples() if ex.rejected]
        weighted = any(ex.weight != 1.0 for ex in pairs)
        return [{"prompt": ex.chat(), "chosen": assistant(ex.reference), "rejected": assistant(ex.rejected),
                 **({"weight": ex.weight} if weighted else {})} for ex in pairs]

    def rl_rows(self) -> list[dict]:
        return [{"prompt": ex.chat(), **ex.columns} for ex in self.train_examples()]

    def methods(self) -> tuple[str, ...]:
        """The methods this task's data can feed (every built-in task feeds all of them)."""
        return ("sft", "dpo", "ppo", "grpo", "rloo", "reward")

    def gold_reward(self, completions: list[str], columns: dict[str, list]) -> tuple[list[float], dict[str, list[float]]]:
        """Total gold reward per completion (mean of the components) and each component."""
        parts = {fn.__name__: fn(completions, **columns) for fn in self.reward_fns}
        total = [sum(vals) / len(vals) for vals in zip(*parts.values(), strict=True)]
        return total, (parts if len(parts) > 1 else {})

    def reward_fn(self) -> RewardFn:
        """The gold reward as one TRL-style function."""
        def gold_reward(completions, **columns):
            return self.gold_reward([text_of(c) for c in completions], columns)[0]
        return gold_reward


def _bucket(prompt: str) -> float:
    """A stable pseudo-random number in [0, 1) for a prompt (independent of Python's hash seed)."""
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) / 2**32


def rng_for(name: str) -> random.Random:
    return random.Random(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
