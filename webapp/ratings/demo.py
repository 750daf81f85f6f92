"""A synthetic experiment to rate: finished runs with arithmetic samples and eval/reward metrics written
straight into the database (no training). For trying the arena (`manage.py ratings_demo`), the tests and
the benchmark. Completions never mention the run, method or seed that wrote them."""

from __future__ import annotations

import random
import time

from django.db import transaction

from webapp.experiments.models import Experiment, Metric, Run, Sample


def make_demo_experiment(owner, *, name: str = "Rating demo", methods: tuple[str, ...] = ("sft", "dpo", "grpo"),
                         seeds: int = 1, prompts: int = 8, steps: tuple[int, ...] = (0, 20), samples: int = 2,
                         skill: dict[str, float] | None = None, seed: int = 0) -> Experiment:
    """An experiment with one succeeded run per method and seed. At step 0 every run answers like the
    base model (30 % right); at later steps a method answers right with probability skill[method]."""
    rng = random.Random(seed)
    skill = skill or {m: 0.3 + 0.6 * (k + 1) / len(methods) for k, m in enumerate(methods)}
    questions = [(rng.randint(2, 60), rng.randint(2, 60)) for _ in range(prompts)]
    now = time.time()
    with transaction.atomic():
        experiment = Experiment.objects.create(
            owner=owner, name=name, base_model="tiny", task="arithmetic", methods=list(methods), seeds=seeds,
            max_steps=max(steps), eval_every=max(1, max(steps) // max(1, len(steps) - 1)), eval_prompts=prompts,
            eval_samples=samples)
        for s in range(seeds):
            for method in methods:
                run = Run.objects.create(experiment=experiment, method=method, seed=s, config={"method": method},
                                         state=Run.State.SUCCEEDED, step=max(steps), total=max(steps))
                rows, metrics = [], []
                for step in steps:
                    p = 0.3 if step == 0 else skill[method]
                    rewards = []
                    for prompt_id, (a, b) in enumerate(questions):
                        for index in range(samples):
                            right = rng.random() < p
                            answer = a + b if right else a + b + rng.choice([-11, -2, -1, 1, 3, 10])
                            words = rng.choice(["The answer is {}.", "{}", "It is {}", "{} is the sum.", "= {}"])
                            rows.append(Sample(run=run, step=step, prompt_id=prompt_id, index=index,
                                               prompt=f"What is {a} + {b}?", completion=words.format(answer),
                                               reward=float(right)))
                            rewards.append(float(right))
                    metrics.append(Metric(run=run, step=step, name="eval/reward", value=sum(rewards) / len(rewards),
                                          wall_time=now))
                Sample.objects.bulk_create(rows)
                Metric.objects.bulk_create(metrics)
    return experiment


def simulate_votes(experiment: Experiment, raters: list, votes: int, quality: dict[str, float] | None = None,
                   seed: int = 0, noise: float = 1.0) -> int:
    """Cast `votes` votes through the arena's own pair selection, as raters who prefer the contestant with
    the higher `quality` (a log-strength; default: its eval/reward) with Bradley-Terry noise. Returns the
    number of votes cast."""
    import math

    from webapp.ratings.actions import do_cast_vote
    from webapp.ratings.arena import Arena

    rng = random.Random(seed)
    arena = Arena(experiment)
    if quality is None:
        quality = {k: 4.0 * (r or 0.0) for k, r in arena.rewards().items()}
    cast = 0
    for n in range(votes):
        rater = raters[n % len(raters)]
        item = arena.next_item(rater, rng)
        if item is None:
            continue
        gap = (quality.get(item.first, 0.0) - quality.get(item.second, 0.0)) / noise
        p_first = 1 / (1 + math.exp(-gap))
        u = rng.random()
        if u < 0.1:
            outcome = "tie" if rng.random() < 0.7 else "both_bad"
        else:
            first_wins = rng.random() < p_first
            outcome = "a" if first_wins == item.left_is_first else "b"
        do_cast_vote(experiment, rater, item, outcome)
        cast += 1
    return cast
