"""Rounds: votes -> a preference dataset -> a reward model and DPO -> new runs -> the arena again.

`do_start_round` starts round N+1 of an experiment from contestants the owner picks (default: the current
leader): per pick, a reward model trained on the vote dataset, RL runs (PPO by default; GRPO, RLOO) that
wait for it and optimise it, and DPO on the vote pairs, all starting from the picked model and evaluated
on the experiment's own prompts with its gold signal. `rounds_summary` is the rounds page's data step."""

from __future__ import annotations

import math
import secrets

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from webapp.experiments.actions import enqueue
from webapp.experiments.models import Experiment, Metric, Run
from webapp.ratings.arena import Arena
from webapp.ratings.contestants import parse_key
from webapp.ratings.models import BASE, Round, Vote, VoteDataset

RL_METHODS = ("ppo", "grpo", "rloo")
DEFAULT_METHODS = ("ppo", "dpo")


class RoundError(ValueError):
    pass


def leader(experiment: Experiment) -> str | None:
    """The contestant ranked first on the leaderboard (highest Bradley-Terry score), or None without votes."""
    from webapp.ratings.leaderboard import build_leaderboard

    board = build_leaderboard(experiment, rounds=200)
    ranked = [r for r in board.rows if r.votes and r.score is not None]
    return ranked[0].key if ranked else None


def pickable(arena: Arena) -> list[str]:
    """Contestants a round may start from: the base model and finished runs at their final evaluation
    (reward models are not policies)."""
    out = [BASE] if arena.base_run is not None else []
    for run in arena.runs.values():
        final = arena.final_step(run.pk)
        if run.state == Run.State.SUCCEEDED and run.method != "reward" and final is not None and run.out_dir:
            out.append(f"{run.pk}@{final}")
    return out


def start_model(arena: Arena, key: str) -> str:
    """What a picked contestant's runs load: the base model, or a finished run's final model (a pick must be
    a run at its final evaluation: intermediate evaluations keep no loadable model)."""
    if key == BASE:
        from webapp.experiments.references import model_path

        return model_path(arena.experiment.base_model)
    parsed = parse_key(key)
    run = arena.runs.get(parsed[0]) if parsed else None
    if run is None or run.state != Run.State.SUCCEEDED or not run.out_dir:
        raise RoundError(f"{key}: not a finished run of this experiment")
    if parsed[1] != arena.final_step(run.pk):
        raise RoundError(f"{arena.label(key)}: a round starts from a run's final model, not an earlier evaluation")
    return str(run.model_dir)


def do_start_round(experiment: Experiment, vote_set: VoteDataset, *, picks: list[str] | None = None,
                   methods: tuple[str, ...] = DEFAULT_METHODS, by=None, hyperparams: dict | None = None,
                   seed: int = 0) -> Round:
    """Round N+1: per picked contestant, a reward model on `vote_set` then the RL `methods` with it as
    training signal (they wait for it), and DPO on the vote pairs if asked, all from the picked model."""
    if vote_set.experiment_id != experiment.pk:
        raise RoundError("the vote dataset is another experiment's")
    unknown = [m for m in methods if m not in (*RL_METHODS, "dpo")]
    if unknown or not methods:
        raise RoundError(f"methods: some of {', '.join((*RL_METHODS, 'dpo'))}")
    arena = Arena(experiment, include_base=True)
    picks = picks or [k for k in [leader(experiment)] if k]
    if not picks:
        raise RoundError("no leader yet (no votes): pick the contestants to start from")
    models = {key: start_model(arena, key) for key in picks}
    hyperparams = hyperparams or {}
    votes_spec = vote_set.dataset.spec()
    measured = experiment.saved_dataset.spec() if experiment.saved_dataset_id else experiment.task_for_config()
    with transaction.atomic():
        number = (Round.objects.select_for_update().filter(experiment=experiment).aggregate(n=Max("number"))["n"]
                  or 1) + 1
        round_ = Round.objects.create(experiment=experiment, number=number, started_from=list(picks),
                                      vote_dataset=vote_set, started_by=by)
        runs, starts = [], {}

        def make(method: str, config: dict, *, waits_for: Run | None = None) -> Run:
            run = Run.objects.create(experiment=experiment, method=method, seed=seed, config=config,
                                     depends_on=waits_for, state=Run.State.WAITING if waits_for else Run.State.QUEUED,
                                     log=f"round {number}: " + (f"waiting for {waits_for.label}" if waits_for
                                                                else "queued"))
            run.out_dir = str(settings.ARTIFACT_ROOT / "runs" / f"{run.pk}-{secrets.token_hex(4)}")
            run.save(update_fields=["out_dir"])
            runs.append(run)
            if waits_for is None:
                enqueue(run, experiment.queue)
            return run

        for key, model in models.items():
            def config(method: str, model=model, **extra) -> dict:
                """The experiment's config of `method` (its evaluation, gold signal, task), from `model`."""
                return {**experiment.run_config(method, seed), **hyperparams.get(method, {}), "model": model,
                        "reference_model": model, **extra}

            rl = [m for m in methods if m in RL_METHODS]
            reward = None
            if rl:
                reward = make("reward", {**config("reward", dataset=votes_spec), "reference_model": ""})
                round_.reward_model_run = reward
                starts[reward.pk] = key
                for method in rl:  # the reward model is their training signal (set when it succeeds)
                    cfg = {k: v for k, v in config(method).items() if k != "reward"}
                    starts[make(method, cfg, waits_for=reward).pk] = key
            if "dpo" in methods:
                starts[make("dpo", config("dpo", dataset=votes_spec, eval_task=measured)).pk] = key
        round_.starts = {str(k): v for k, v in starts.items()}
        round_.save(update_fields=["reward_model_run", "starts"])
        round_.runs.set(runs)
    return round_


def _metric(run_ids: list[int], name: str) -> dict[int, float]:
    """Each run's value of `name` at its last step that has it."""
    out: dict[int, tuple[int, float]] = {}
    for run_id, step, value in Metric.objects.filter(run_id__in=run_ids, name=name).values_list(
            "run_id", "step", "value").order_by():
        if value is not None and math.isfinite(value) and (run_id not in out or step >= out[run_id][0]):
            out[run_id] = (step, value)
    return {k: v for k, (_, v) in out.items()}


def rounds_summary(experiment: Experiment) -> list[dict]:
    """Per round: its runs (label, state, gold reward, KL from their own start and, chained through the runs
    they start from, from the original base model), the reward model's held-out accuracy on votes, the
    votes it cost, and the leaderboard rows of its contestants."""
    from webapp.ratings.leaderboard import build_leaderboard

    arena = Arena(experiment, include_base=True)
    board = build_leaderboard(experiment, rounds=200)
    by_key = {r.key: r for r in board.rows}
    rounds = {r.number: r for r in Round.objects.filter(experiment=experiment).select_related("vote_dataset")}
    in_round = arena.rounds
    run_ids = list(arena.runs)
    gold, kl, acc = _metric(run_ids, "eval/reward"), _metric(run_ids, "eval/kl"), _metric(run_ids, "eval/accuracy")
    starts = {int(k): v for r in rounds.values() for k, v in r.starts.items()}

    def kl_from_base(run_id: int, seen=()) -> float | None:
        """KL from the base, as the sum along the chain of starting models (an upper-bound-free estimate:
        KL is not additive; shown as such)."""
        own = kl.get(run_id)
        if own is None:
            return None
        start = starts.get(run_id)
        parent = parse_key(start)[0] if start and start != BASE else arena.runs[run_id].depends_on_id
        if parent is None or parent in seen or arena.runs.get(parent) is None or arena.runs[parent].method == "reward":
            return own
        up = kl_from_base(parent, (*seen, run_id))
        return None if up is None else own + up

    out = []
    for number in sorted({1, *rounds}):
        runs = [r for r in arena.runs.values() if in_round.get(r.pk, 1) == number]
        rows = []
        for run in runs:
            key = next((k for k in [*arena.sources, *by_key] if (parse_key(k) or (0,))[0] == run.pk), None)
            lb = by_key.get(key) if key else None
            rows.append({"run": run.pk, "label": arena.label(key) if key else f"{run.label} (#{run.pk})",
                         "method": run.method, "state": run.state, "gold_reward": gold.get(run.pk),
                         "kl": kl.get(run.pk), "kl_from_base": kl_from_base(run.pk),
                         "accuracy": acc.get(run.pk) if run.method == "reward" else None,
                         "bt_score": lb.score if lb and lb.votes else None, "rank": lb.rank if lb else None,
                         "votes": lb.votes if lb else 0})
        r = rounds.get(number)
        out.append({"number": number, "runs": rows, "started_from": [arena.label(k) for k in r.started_from] if r
                    else [], "vote_dataset": r.vote_dataset_id if r else None,
                    "votes_cost": r.vote_dataset.votes if r and r.vote_dataset else None,
                    "reward_model_accuracy": acc.get(r.reward_model_run_id) if r and r.reward_model_run_id else None})
    if BASE in by_key:
        out[0]["runs"].insert(0, {"run": None, "label": "Base model", "method": "base", "state": "", "gold_reward":
                                  by_key[BASE].reward, "kl": 0.0, "kl_from_base": 0.0, "accuracy": None,
                                  "bt_score": by_key[BASE].score, "rank": by_key[BASE].rank,
                                  "votes": by_key[BASE].votes})
    return out


def total_votes(experiment: Experiment) -> int:
    return Vote.objects.filter(experiment=experiment).count()
