"""The loop closed through real workers on `tiny`: two simulated raters whose votes follow a hidden rule
(the shorter answer is better) rate an experiment; their votes become a preference dataset; round 2 trains
a reward model on it, PPO with that reward model and DPO on the vote pairs, from the leader. The reward
model's accuracy on the hidden rule (pairs nobody voted on) beats chance, and PPO's round-2 answers move
toward it (mean length change per prompt, with a bootstrap interval)."""

from __future__ import annotations

import json
import math
import os
import random

import pytest
import torch

from tests.webapp.test_integration import (  # noqa: F401  (fixtures)
    WAIT,
    artifact_root,
    broker,
    browser,
    enqueued,
    finished,
    queue,
    redis_url,
    wait_for,
    worker,
)
from webapp.experiments.models import Metric, Run, Sample
from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.models import Invitation, RatingSetup
from webapp.ratings.rounds import do_start_round, rounds_summary
from webapp.ratings.votesets import Policy, do_build_vote_dataset

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def rate_by_hidden_rule(exp, raters, rng: random.Random, noise: float = 0.1) -> int:
    """Every rater rates every item: the shorter answer wins (equal lengths: a tie), flipped with `noise`."""
    arena = Arena(exp)
    cast = 0
    for rater in raters:
        while (item := arena.next_item(rater, rng)) is not None:
            if item.repeat:
                continue
            texts = arena.texts(item)
            la, lb = len(texts["a"]), len(texts["b"])
            outcome = "tie" if la == lb else ("a" if la < lb else "b")
            if outcome != "tie" and rng.random() < noise:
                outcome = "b" if outcome == "a" else "a"
            do_cast_vote(exp, rater, item, outcome)
            cast += 1
    return cast


def final_lengths(run: Run) -> dict[int, float]:
    """Mean completion length (characters) per eval prompt at the run's last evaluation."""
    last = Sample.objects.filter(run=run).order_by("-step").values_list("step", flat=True).first()
    out: dict[int, list[int]] = {}
    for prompt_id, text in Sample.objects.filter(run=run, step=last).values_list("prompt_id", "completion"):
        out.setdefault(prompt_id, []).append(len(text))
    return {p: sum(v) / len(v) for p, v in out.items()}


def changes(before: dict[int, float], after: dict[int, float]) -> list[float]:
    """Per-prompt change of the mean length."""
    return [after[p] - before[p] for p in sorted(set(before) & set(after))]


def bootstrap(diffs: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean change and its 95 % bootstrap interval (over prompts)."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(rounds))
    return sum(diffs) / len(diffs), means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def gold(run: Run) -> float:
    """The run's gold reward (eval/reward) at its last evaluation."""
    return Metric.objects.filter(run=run, name="eval/reward").order_by("-step").values_list("value", flat=True)[0]


def rule_accuracy(reward: Run, exp, voted: set[tuple[str, str]], limit: int = 3000) -> tuple[int, int]:
    """The reward model scored on the hidden rule itself, on answers nobody voted on: every pair of answers of
    different length to one prompt among the experiment's samples (earlier evaluations, round 2), minus the
    pairs in the vote dataset. Returns (pairs where the shorter answer scores higher, pairs)."""
    from training.rewards.base import SignalEnv
    from training.rewards.models import RewardModel

    by_prompt: dict[int, tuple[str, set[str]]] = {}
    for prompt_id, prompt, text in Sample.objects.filter(run__experiment=exp).exclude(run=reward).values_list(
            "prompt_id", "prompt", "completion"):
        by_prompt.setdefault(prompt_id, (prompt, set()))[1].add(text)
    pairs = [(prompt, short, long) for prompt, texts in by_prompt.values()
             for short in texts for long in texts
             if len(short) < len(long) and (short, long) not in voted and (long, short) not in voted]
    random.Random(0).shuffle(pairs)
    pairs = pairs[:limit]
    model = RewardModel(path=str(reward.model_dir))
    model.setup(SignalEnv(device=torch.device("cpu")))
    prompts = [p for p, _, _ in pairs]
    short = model([s for _, s, _ in pairs], prompts=prompts)
    long = model([t for _, _, t in pairs], prompts=prompts)
    return sum(a > b for a, b in zip(short, long, strict=True)), len(pairs)


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


# Two loops by default: PPO's move is judged over both (one seed's move ranged -3.6..-20 chars in 8 loops).
SEEDS = [int(s) for s in os.environ.get("PTLAB_LOOP_SEEDS", "0,1").split(",")]


def one_loop(browser, queue, worker, owner, rater, seed: int) -> dict:  # noqa: F811
    """Round 1 (SFT, DPO), both raters rate every item, a vote dataset, round 2 from the leader."""
    exp = browser.create_experiment(
        name=f"loop {seed}", methods=["sft", "dpo"], rl_from_sft=None, queue=queue, max_steps="8", eval_every="4",
        eval_prompts="32", eval_samples="2", max_new_tokens="12", **{"sft-max_steps": "8"})
    runs = wait_for(lambda: finished(exp), WAIT, "round 1 to finish", worker)
    assert all(r.state == Run.State.SUCCEEDED for r in runs), [r.error for r in runs]
    Invitation.objects.create(experiment=exp, rater=rater, invited_by=owner)
    # Reveals at the end: every item can be rated (after each vote, texts once attributed are skipped).
    RatingSetup.objects.create(experiment=exp, reveal=RatingSetup.Reveal.AT_END)

    votes = rate_by_hidden_rule(exp, [owner, rater], random.Random(seed))
    assert votes >= 100  # 2 raters x 3 pairs x the held-out prompts
    vote_set = do_build_vote_dataset(owner, [exp], Policy(ties="drop", both_bad="drop", disagree="keep"))
    assert vote_set.dataset.eval_rows > 0
    round_ = do_start_round(exp, vote_set, methods=("ppo", "dpo"), by=owner, seed=seed,
                            hyperparams={"reward": {"max_steps": 80}, "ppo": {"max_steps": 16},
                                         "dpo": {"max_steps": 8, "sft_weight": 1.0}})
    runs2 = wait_for(lambda: finished(exp), 2 * WAIT, "round 2 to finish", worker)
    assert all(r.state == Run.State.SUCCEEDED for r in runs2), [(r.method, r.error) for r in runs2]

    reward = round_.reward_model_run
    accuracy = Metric.objects.filter(run=reward, name="eval/accuracy").order_by("-step").values_list(
        "value", flat=True).first()
    n = vote_set.dataset.eval_rows
    low, high = wilson(round(accuracy * n), n)
    print(f"\nseed {seed}: {votes} votes -> {vote_set.dataset.rows} pairs; reward model held-out accuracy on votes "
          f"{accuracy:.3f} (n={n}, 95% Wilson [{low:.3f}, {high:.3f}])")
    with vote_set.dataset.file.open("rb") as f:
        voted = {(r["chosen"], r["rejected"]) for r in map(json.loads, f.read().splitlines())}
    k, n_rule = rule_accuracy(reward, exp, voted)
    rule_low, rule_high = wilson(k, n_rule)
    print(f"seed {seed}: reward model accuracy on the hidden rule, unvoted pairs: {k / n_rule:.3f} (n={n_rule}, "
          f"95% Wilson [{rule_low:.3f}, {rule_high:.3f}])")
    assert round_.started_from[0] != "base", "the base model led: nothing trained to start from"
    picked = Run.objects.get(pk=int(round_.started_from[0].split("@")[0]))
    before = final_lengths(picked)
    shifts = {}
    for run in round_.runs.exclude(method="reward"):
        assert run.config["model"] == str(picked.model_dir)
        shifts[run.method] = diffs = changes(before, final_lengths(run))
        (mean, lo, hi), n_prompts = bootstrap(diffs), len(diffs)
        print(f"seed {seed}: round 2 {run.method} from {picked.method}: mean length change {mean:+.2f} chars per "
              f"prompt (95% bootstrap [{lo:+.2f}, {hi:+.2f}], {n_prompts} prompts); gold eval/reward "
              f"{gold(picked):.3f} -> {gold(run):.3f}")
        trained = Metric.objects.filter(run=run, name__startswith="train/").order_by("step")
        print("  ", "; ".join(f"{m.step}:{m.name.removeprefix('train/')}={m.value:.3g}" for m in trained
                             if m.name.split("/")[-1] in ("reward", "loss", "kl", "reward_std", "clipfrac")))
        print("   eval:", list(Metric.objects.filter(run=run, name__in=["eval/kl", "eval/reward", "eval/length"]).order_by(
            "step", "name").values_list("step", "name", "value")), "sample steps:",
              sorted(set(Sample.objects.filter(run=run).values_list("step", flat=True))), run.config.get("max_steps"),
              run.config.get("eval_every"), run.log[-600:])
    # Round 2 joins the arena beside round 1, labelled by what it is; the rounds page has its numbers.
    arena = Arena(exp)
    labels = [arena.label(k) for k in arena.contestants]
    assert any(label.startswith("Round 2: DPO from") for label in labels), labels
    summary = rounds_summary(exp)
    assert summary[1]["reward_model_accuracy"] == pytest.approx(accuracy)
    assert summary[1]["votes_cost"] == vote_set.votes
    return {"accuracy": accuracy, "n": n, "rule": (k, n_rule), **shifts}


def test_votes_train_round_two_toward_the_raters_hidden_preference(browser, worker, queue, django_user_model):  # noqa: F811
    owner = django_user_model.objects.get(username="ivy")
    rater = django_user_model.objects.create_user("rex", password="pw-rex-12345")
    results = [one_loop(browser, queue, worker, owner, rater, seed) for seed in SEEDS]
    for r in results:
        # On ~21 held-out votes the accuracy is too noisy to judge (0.38-0.91 seen): reported only. On the
        # hidden rule itself, over ~1,400-2,000 pairs nobody voted on, it is above chance (0.64-0.76 seen).
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] >= 10
        k, n = r["rule"]
        assert n >= 500 and wilson(k, n)[0] > 0.5, (k, n)
    # PPO on that reward model gives shorter answers: over the loops' prompts, the whole interval is below
    # zero (per loop -3.6 [-6.0, -1.6] .. -20.0 [-23.6, -16.2] in 8 loops). DPO on the vote pairs is
    # reported, not asserted: it barely moves (-0.5..+0.3 with the RPO term; +2.4..+2.8, longer, without
    # it; bench/RESULTS.md).
    for method in ("ppo", "dpo"):
        mean, lo, hi = bootstrap([d for r in results for d in r[method]])
        print(f"{method} over {len(results)} loop(s): {mean:+.2f} chars per prompt [{lo:+.2f}, {hi:+.2f}]")
    assert bootstrap([d for r in results for d in r["ppo"]])[2] < 0
