"""A local judge as a stand-in rater (RLAIF), calibrated against people first.

The judge (training.rewards' `pairwise_judge`: a causal LM read from token probabilities, both orders
averaged, so position bias cancels) votes on the very items people voted on; its votes are Vote rows
marked with `judge` and cast by a judge user of their own ("~judge-<name>"). `calibration` compares it
with people on shared items: percent agreement and Cohen's kappa, each with a bootstrap interval, and its
own Bradley-Terry ranking. Its votes may join a vote dataset only when the lower end of kappa's interval
reaches the owner's threshold (`judge_allowed`); they never enter the people's leaderboard."""

from __future__ import annotations

import random
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from webapp.experiments.models import Experiment
from webapp.ratings import bt
from webapp.ratings.arena import Arena
from webapp.ratings.items import Item
from webapp.ratings.models import RatingSetup, Vote

JUDGE_PREFIX = "~judge-"
MARGIN = 0.05  # |P(first better) - 0.5| below this is a tie
BOOTSTRAP = 1000


def judge_user(name: str):
    """The inactive user that holds a judge's votes (a '~' name: never a valid username in the forms)."""
    user, created = get_user_model().objects.get_or_create(username=f"{JUDGE_PREFIX}{name}"[:150],
                                                           defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def result_of(p_first: float, margin: float = MARGIN) -> str:
    if p_first > 0.5 + margin:
        return Vote.FIRST
    if p_first < 0.5 - margin:
        return Vote.SECOND
    return Vote.TIE


def human_items(experiment: Experiment) -> list[tuple[int, str, str, int]]:
    """(prompt id, first, second, sample index) of every item people voted on."""
    return sorted(set(Vote.objects.at(experiment).values_list("prompt_id", "first", "second", "sample_index")))


def do_judge_votes(experiment: Experiment, judge, name: str = "judge", items=None, margin: float = MARGIN,
                   writing=transaction.atomic) -> int:
    """The judge votes on `items` (default: every item people voted on) through `judge`, a callable
    (completions, prompts=..., reference=...) -> P(completion better than reference), e.g. a ready
    PairwiseJudge. Returns the number of votes written (one per item: a repeat replaces it), all in one
    transaction, `writing()` (a job's: written only while its attempt holds it)."""
    arena = Arena(experiment, include_base=True)
    items = human_items(experiment) if items is None else items
    texts = arena.completions
    rows = []
    for prompt_id, first, second, index in items:
        a, b = texts.get((first, prompt_id, index)), texts.get((second, prompt_id, index))
        if a is None or b is None:
            continue
        item = Item(0, prompt_id, index, first, second, True)
        rows.append((item, a, b, arena.texts(item)["prompt"]))
    if not rows:
        return 0
    probs = judge([a for _, a, _, _ in rows], prompts=[p for *_, p in rows], reference=[b for _, _, b, _ in rows])
    user = judge_user(name)
    outcome = {Vote.FIRST: Vote.Outcome.A, Vote.SECOND: Vote.Outcome.B, Vote.TIE: Vote.Outcome.TIE}
    with writing():
        for (item, *_), p in zip(rows, probs, strict=True):
            Vote.objects.update_or_create(
                experiment=experiment, rater=user, step=0, prompt_id=item.prompt_id, first=item.first,
                second=item.second, defaults={"sample_index": item.index, "left_is_first": True, "judge": name,
                                              "outcome": outcome[result_of(float(p), margin)]})
    return len(rows)


def local_judge(model: str = "tiny", device: str = "auto"):
    """A ready pairwise judge (training.rewards) on `model`."""
    from training.models import pick_device
    from training.rewards.base import SignalEnv
    from training.rewards.models import PairwiseJudge

    judge = PairwiseJudge(model=model)
    judge.setup(SignalEnv(device=pick_device(device)))
    return judge


@dataclass
class Calibration:
    judge: str
    items: int  # items both the judge and at least one person rated
    percent: float | None
    percent_low: float | None
    percent_high: float | None
    kappa: float | None
    kappa_low: float | None
    kappa_high: float | None
    ranking: list[tuple[str, float]]  # (contestant, BT score) by the judge's votes alone
    threshold: float | None
    allowed: bool


def calibration(experiment: Experiment, rounds: int = BOOTSTRAP, seed: int = 0) -> list[Calibration]:
    """Each judge's agreement with people (every person's vote on an item the judge rated is one pair) and
    its own ranking."""
    all_votes = list(Vote.objects.at(experiment, judges=True).values_list(
        "prompt_id", "first", "second", "outcome", "left_is_first", "judge"))
    people: dict[tuple, list[str]] = {}
    judges: dict[str, dict[tuple, str]] = {}
    for prompt_id, first, second, outcome, left_is_first, judge in all_votes:
        key, result = (prompt_id, first, second), Vote.result_of(outcome, left_is_first)
        if judge:
            judges.setdefault(judge, {})[key] = result
        else:
            people.setdefault(key, []).append(result)
    threshold = RatingSetup.for_experiment(experiment).judge_threshold
    out = []
    for name, said in sorted(judges.items()):
        pairs = [(h, said[key]) for key, hs in people.items() if key in said for h in hs]
        items = len({key for key in people if key in said})
        percent = kappa = None
        p_lo = p_hi = k_lo = k_hi = None
        if pairs:
            xs, ys = [h for h, _ in pairs], [j for _, j in pairs]
            percent, kappa = bt.percent_agreement(xs, ys), bt.cohen_kappa(xs, ys)
            rng = random.Random(seed)
            ps, ks = [], []
            for _ in range(rounds):
                sample = [pairs[rng.randrange(len(pairs))] for _ in pairs]
                ps.append(bt.percent_agreement([h for h, _ in sample], [j for _, j in sample]))
                k = bt.cohen_kappa([h for h, _ in sample], [j for _, j in sample])
                if k is not None:
                    ks.append(k)
            ps.sort()
            ks.sort()
            p_lo, p_hi = ps[int(0.025 * len(ps))], ps[int(0.975 * len(ps)) - 1]
            if ks:
                k_lo, k_hi = ks[int(0.025 * len(ks))], ks[max(0, int(0.975 * len(ks)) - 1)]
        keys = sorted({k for key in said for k in key[1:]})
        index = {k: n for n, k in enumerate(keys)}
        i = [index[key[1]] for key in said]
        j = [index[key[2]] for key in said]
        s = [1.0 if r == Vote.FIRST else 0.0 if r == Vote.SECOND else 0.5 for r in said.values()]
        ranking = []
        if keys:
            fit = bt.bradley_terry(len(keys), i, j, s, rounds=0 if rounds < 1 else 50, seed=seed)
            arena = Arena(experiment, include_base=True)
            ranking = sorted(((arena.label(k), float(fit.score[index[k]])) for k in keys), key=lambda t: -t[1])
        allowed = threshold is not None and k_lo is not None and k_lo >= threshold
        out.append(Calibration(name, items, percent, p_lo, p_hi, kappa, k_lo, k_hi, ranking, threshold, allowed))
    return out


def judge_allowed(experiment: Experiment) -> bool:
    """Whether every judge that voted on `experiment` passes the owner's threshold (none voted: True)."""
    return all(c.allowed for c in calibration(experiment, rounds=200))


def do_judge_more(experiment: Experiment, judge, name: str = "judge", limit: int = 100,
                  writing=transaction.atomic) -> int:
    """The judge labels up to `limit` items no person has rated (more pairs for the next round), only when
    its calibration passes the owner's threshold; raises PermissionError otherwise. `writing`: as in
    do_judge_votes."""
    found = [c for c in calibration(experiment, rounds=200) if c.judge == name]
    if not found or not found[0].allowed:
        raise PermissionError(f"{name} may label more pairs only once its agreement with people passes the "
                              "owner's threshold (Cohen's kappa, lower end of the 95% interval)")
    arena = Arena(experiment, include_base=True)
    rated = {(p, f, s) for p, f, s, _ in human_items(experiment)}
    judged = set(Vote.objects.at(experiment, judges=True).filter(judge=name).values_list(
        "prompt_id", "first", "second"))
    items = []
    for first, second in arena.pairs:
        for prompt_id in arena.prompt_ids:
            if (prompt_id, first, second) in rated | judged:
                continue
            index = arena.index_for(first, second, prompt_id)  # the completion every rater would see
            if index is not None:
                items.append((prompt_id, first, second, index))
    return do_judge_votes(experiment, judge, name, items=items[:limit], writing=writing)
