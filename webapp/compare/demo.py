"""Synthetic, deterministic metrics and samples for an experiment's runs: the comparison page with
no training at all (tests, the browser test, screenshots, benchmarks). Curves have the usual shapes:
reward rising towards a method's ceiling, KL growing, losses falling, with seed noise."""

from __future__ import annotations

import math
import random
import time

from django.db import transaction
from django.utils import timezone

from webapp.experiments.models import Experiment, Metric, Run, Sample

CEILING = {"sft": 0.45, "dpo": 0.62, "ppo": 0.74, "grpo": 0.7, "rloo": 0.68}
KL_RATE = {"sft": 2.0, "dpo": 3.5, "ppo": 6.0, "grpo": 4.5, "rloo": 5.0}
TRAIN_KEYS = {
    "sft": ("loss", "num_tokens", "mean_token_accuracy"),
    "dpo": ("loss", "num_tokens", "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected"),
    "ppo": ("loss/policy", "loss/value", "loss/total", "policy/clipfrac", "policy/approxkl", "objective/kl",
            "objective/scores", "completions/mean_length"),
    "grpo": ("loss", "num_tokens", "reward", "reward_std", "kl", "completions/mean_length"),
}
TRAIN_KEYS["rloo"] = TRAIN_KEYS["grpo"]
WORDS = ("the", "answer", "is", "a", "good", "film", "really", "great", "fine", "so", "and", "very", "nice")


def _train_value(key: str, progress: float, step: int, rng: random.Random) -> float:
    noise = rng.gauss(0, 1)
    if key == "num_tokens":
        return 384.0 * step
    if key in ("rewards/accuracies", "mean_token_accuracy"):
        return min(1.0, max(0.0, 0.5 + 0.45 * (1 - math.exp(-5 * progress)) + 0.08 * noise))
    if key == "rewards/margins":
        return 3.0 * (1 - math.exp(-3 * progress)) + 0.3 * noise
    if key in ("rewards/chosen", "rewards/rejected"):
        return (1 if key.endswith("chosen") else -1) * 1.5 * progress + 0.2 * noise
    if key == "policy/clipfrac":
        return max(0.0, 0.12 * math.exp(-2 * progress) + 0.02 * noise)
    if key in ("policy/approxkl", "kl"):
        return max(0.0, 0.01 + 0.02 * progress + 0.004 * noise)
    if key == "objective/kl":
        return 4 * progress + 0.2 * noise
    if key in ("objective/scores", "reward"):
        return 0.2 + 0.6 * (1 - math.exp(-3 * progress)) + 0.06 * noise
    if key == "reward_std":
        return max(0.0, 0.3 * math.exp(-1.5 * progress) + 0.03 * noise)
    if key == "completions/mean_length":
        return 12 + 6 * progress + noise
    return 0.3 + 1.2 * math.exp(-3 * progress) + 0.05 * noise  # losses


def _completion(rng: random.Random, step: int, prompt_id: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(4 + (prompt_id + step) % 7)).capitalize() + "."


def fill_run(run: Run, *, steps: int, eval_every: int, prompts: int = 4, per_prompt: int = 2, proxy: bool = False,
             state: str = Run.State.SUCCEEDED, until: int | None = None, completion=None, start: float | None = None,
             seconds_per_step: float = 0.5) -> None:
    """Metrics (every step for train/*, every `eval_every` steps for eval/*) and samples for one run,
    up to step `until` (default: all). `completion(step, prompt_id, index)` overrides the texts."""
    rng = random.Random(f"{run.method}-{run.seed}-{run.experiment_id}")
    until = steps if until is None else until
    start = time.time() - steps * seconds_per_step if start is None else start
    ceiling = CEILING.get(run.method, 0.6) + 0.03 * (run.seed % 3 - 1)
    metrics, samples, latest = [], [], {}
    for step in range(until + 1):
        progress = step / max(steps, 1)
        wall = start + step * seconds_per_step
        if step > 0:
            for key in TRAIN_KEYS.get(run.method, ("loss",)):
                metrics.append(Metric(run=run, step=step, name=f"train/{key}",
                                      value=_train_value(key, progress, step, rng), wall_time=wall))
        if step % eval_every == 0 or step == until:
            gold = 0.15 + (ceiling - 0.15) * (1 - math.exp(-4 * progress)) + rng.gauss(0, 0.015)
            kl = 0.0 if step == 0 else KL_RATE.get(run.method, 3.0) * progress ** 1.3 + abs(rng.gauss(0, 0.05))
            evals = {"eval/reward": gold, "eval/reward_std": 0.2 + 0.05 * rng.random(), "eval/kl": kl,
                     "eval/kl_stderr": 0.05 * (1 + kl) / 4, "eval/length": 12 + 4 * progress + rng.random()}
            if proxy:
                # The proxy keeps climbing while the gold reward turns down: over-optimisation.
                evals["eval/proxy_reward"] = gold + 0.9 * progress ** 2
                evals["eval/reward"] = gold - 0.35 * progress ** 3
            for name, value in evals.items():
                metrics.append(Metric(run=run, step=step, name=name, value=value, wall_time=wall + 0.2))
            latest = {**evals, "step": step}
            for prompt_id in range(prompts):
                for index in range(per_prompt):
                    text = completion(step, prompt_id, index) if completion else _completion(rng, step, prompt_id)
                    samples.append(Sample(run=run, step=step, prompt_id=prompt_id, index=index,
                                          prompt=f"Question {prompt_id}: what is {prompt_id + 2} + {prompt_id * 3}?",
                                          completion=text, reward=round(gold + rng.gauss(0, 0.1), 4)))
    now = timezone.now()
    with transaction.atomic():
        Metric.objects.bulk_create(metrics, batch_size=2000)
        Sample.objects.bulk_create(samples, batch_size=2000)
        Run.objects.filter(pk=run.pk).update(
            state=state, step=until, total=steps, latest=latest, phase="done" if state == Run.State.SUCCEEDED else "training",
            started_at=now, finished_at=now if state == Run.State.SUCCEEDED else None)


def fill_experiment(experiment: Experiment, *, steps: int = 200, eval_every: int = 20, proxy_methods=("ppo",),
                    running: tuple[int, ...] = (), **kwargs) -> list[Run]:
    """fill_run for every run of the experiment; runs with ids in `running` stop halfway, still running."""
    runs = list(experiment.runs.all())
    for run in runs:
        live = run.pk in running
        fill_run(run, steps=steps, eval_every=eval_every, proxy=run.method in proxy_methods,
                 state=Run.State.RUNNING if live else Run.State.SUCCEEDED, until=steps // 2 if live else None,
                 prompts=kwargs.get("prompts", experiment.eval_prompts),
                 per_prompt=kwargs.get("per_prompt", experiment.eval_samples),
                 **{k: v for k, v in kwargs.items() if k not in ("prompts", "per_prompt")})
    return list(experiment.runs.all())
