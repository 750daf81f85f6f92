"""Best-of-N: no training. For each eval prompt, sample N completions from the starting model and keep
the best by the training signal (the task's gold reward, or the reward model the config names). Its
KL from the starting model is known analytically, log N - (N - 1) / N (Stiennon et al. 2020; Gao et
al. 2022), so it draws the reference frontier every RL method should beat.

The run evaluates N = 1, 2, 4, ... up to the config's n at steps 0, 1, 2, ...: step k is best-of-2^k
(the last step best-of-n), each a point of the reward-vs-KL frontier with eval/kl the formula's value.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from training.callbacks import Sample
from training.evaluation import EvalSettings, Evaluator
from training.methods.common import MethodContext, TrainResult
from training.tasks.base import user


def bon_kl(n: int) -> float:
    """KL(best-of-n || base) in nats, for a continuous signal without ties: log n - (n - 1) / n."""
    if n < 1:
        raise ValueError("n must be at least 1")
    return math.log(n) - (n - 1) / n


def steps_for(n: int) -> int:
    """The last step of a best-of-n run: step k evaluates best-of-2^k, the last best-of-n."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def n_at(step: int, n: int) -> int:
    return min(2 ** step, n)


def pick_best(scores: list[float], n: int) -> list[int]:
    """Indices of the best of each consecutive group of `n` scores (the first on ties)."""
    return [g * n + max(range(n), key=lambda i: scores[g * n + i]) for g in range(len(scores) // n)]


class BestOfNEvaluator:
    """The uniform evaluation of best-of-N: at step k, each of the K eval samples of a prompt is the best
    of 2^k (at most n) completions of the starting model by the training signal; scored by the gold
    reward like every other run. Sampling uses the evaluation's seed, as for every method."""

    def __init__(self, task, tokenizer, reference, settings: EvalSettings, device: torch.device, n: int,
                 signal=None, proxy_is_signal: bool = False, gold_reward=None, monitors=()):
        self.task, self.tok, self.reference, self.s, self.device = task, tokenizer, reference, settings, device
        self.n, self.signal, self.proxy_is_signal = n, signal, proxy_is_signal
        self.gold_reward, self.monitors = gold_reward, tuple(monitors)
        self._inner: dict[int, Evaluator] = {}

    def inner(self, n: int) -> Evaluator:
        if n not in self._inner:
            self._inner[n] = Evaluator(self.task, self.tok, self.reference,
                                       replace(self.s, samples=self.s.samples * n), self.device,
                                       gold_reward=self.gold_reward, monitors=self.monitors)
        return self._inner[n]

    def __call__(self, model, step: int, *, is_reference: bool = False):
        n = n_at(step, self.n)
        ev = self.inner(n)
        # The policy is the starting model: no reference pass (its KL is the formula's, not an estimate).
        _, drawn = ev(model, step, is_reference=True)
        k = self.s.samples
        texts = [s.completion for s in drawn]
        if self.signal is None:
            scores = [s.reward for s in drawn]
        else:
            prompts = [user(ev.prompts[s.prompt_id]) for s in drawn]
            scores = list(self.signal(texts, prompts=prompts, **ev.columns))
        kept = pick_best(scores, n)
        rewards = torch.tensor([drawn[i].reward for i in kept], dtype=torch.float64)
        lengths = [len(self.tok(texts[i], add_special_tokens=False)["input_ids"]) for i in kept]
        m = len(kept)
        metrics = {
            "eval/reward": rewards.mean().item(),
            "eval/reward_std": rewards.std(unbiased=True).item() if m > 1 else 0.0,
            "eval/kl": bon_kl(n), "eval/kl_stderr": 0.0,
            "eval/length": sum(lengths) / m,  # re-tokenised text (no EOS): close to the other runs' count
            "eval/best_of": float(n),
        }
        if self.proxy_is_signal:
            metrics["eval/proxy_reward"] = sum(scores[i] for i in kept) / m
        samples = [Sample(step=step, prompt=drawn[i].prompt, completion=texts[i], reward=drawn[i].reward,
                          index=j % k, prompt_id=drawn[i].prompt_id) for j, i in enumerate(kept)]
        return metrics, samples


def train(ctx: MethodContext) -> TrainResult:
    """No training: evaluate best-of-2^k at steps 1, 2, ... (step 0 and the last step are the runner's)."""
    last = steps_for(ctx.cfg.n)
    for step in range(1, last):
        if ctx.hooks.stopped or ctx.hooks.lost:
            return TrainResult(model=ctx.model, step=step - 1)
        ctx.hooks.run_eval(step, ctx.model)
    return TrainResult(model=ctx.model, step=last)
