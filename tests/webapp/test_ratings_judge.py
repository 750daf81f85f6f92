"""A judge as a stand-in rater: it votes on the items people voted on, its votes are marked and kept out
of the people's leaderboard and of vote datasets, its agreement with people is measured (percent, Cohen's
kappa with intervals), and it labels more pairs only above the owner's threshold."""

from __future__ import annotations

import pytest

from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.judge import calibration, do_judge_more, do_judge_votes, judge_allowed, local_judge
from webapp.ratings.leaderboard import build_leaderboard
from webapp.ratings.models import RatingSetup, Vote
from webapp.ratings.votesets import Policy, do_build_vote_dataset

pytestmark = pytest.mark.django_db


def shorter_is_better(completions, prompts=None, reference=None):
    """A stand-in judge: P(completion better than the reference) from their lengths."""
    return [0.9 if len(c) < len(r) else 0.1 if len(c) > len(r) else 0.5 for c, r in zip(completions, reference,
                                                                                      strict=True)]


@pytest.fixture
def exp(alice, bob):
    e = make_demo_experiment(alice, methods=("sft", "dpo", "grpo"), prompts=8, steps=(0, 10))
    RatingSetup.objects.create(experiment=e, reveal=RatingSetup.Reveal.AT_END)
    arena = Arena(e)
    for rater in (alice, bob):  # people who prefer shorter answers, on half the prompts
        for first, second in arena.pairs:
            for prompt_id in arena.prompt_ids[:4]:
                index = arena.index_for(first, second, prompt_id)
                a, b = arena.completions[(first, prompt_id, index)], arena.completions[(second, prompt_id, index)]
                from webapp.ratings.items import Item

                outcome = "tie" if len(a) == len(b) else "a" if len(a) < len(b) else "b"
                do_cast_vote(e, rater, Item(0, prompt_id, index, first, second, True), outcome)
    return e


def test_the_judge_votes_on_peoples_items_marked_and_apart(exp):
    people = Vote.objects.filter(experiment=exp).count()
    board = build_leaderboard(exp, rounds=10)
    n = do_judge_votes(exp, shorter_is_better, "lengths")
    items = {(v.prompt_id, v.first, v.second) for v in Vote.objects.filter(experiment=exp, judge="")}
    assert n == len(items)
    judged = Vote.objects.filter(experiment=exp).exclude(judge="")
    assert judged.count() == n and set(judged.values_list("judge", flat=True)) == {"lengths"}
    assert {(v.prompt_id, v.first, v.second) for v in judged} == items
    assert judged.first().rater.username == "~judge-lengths" and not judged.first().rater.is_active
    # the people's leaderboard and vote datasets ignore the judge
    assert build_leaderboard(exp, rounds=10).n_votes == board.n_votes == people
    assert do_build_vote_dataset(exp.owner, [exp], Policy()).votes_read == people


def test_calibration_agreement_kappa_and_the_judges_own_ranking(exp):
    do_judge_votes(exp, shorter_is_better, "lengths")
    do_judge_votes(exp, lambda c, prompts=None, reference=None: [0.9] * len(c), "always-first")
    cal = {c.judge: c for c in calibration(exp, rounds=200)}
    good, bad = cal["lengths"], cal["always-first"]
    assert good.percent == 1.0 and good.kappa == pytest.approx(1.0) and good.percent_low == 1.0
    assert bad.kappa < good.kappa and bad.kappa_low <= bad.kappa <= bad.kappa_high
    assert len(good.ranking) == len(Arena(exp).contestants)
    assert not good.allowed  # no threshold set: never
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(exp.owner)
    page = client.get(reverse("ratings:leaderboard", args=[exp.pk])).content.decode()
    assert 'id="judges"' in page and "always-first" in page and "100%" in page


def test_more_pairs_only_above_the_threshold(exp):
    do_judge_votes(exp, shorter_is_better, "lengths")
    with pytest.raises(PermissionError):
        do_judge_more(exp, shorter_is_better, "lengths")
    with pytest.raises(ValueError, match="not allowed"):
        do_build_vote_dataset(exp.owner, [exp], Policy(), judges=True)
    RatingSetup.objects.filter(experiment=exp).update(judge_threshold=0.5)
    assert judge_allowed(exp)
    before = Vote.objects.exclude(judge="").count()
    more = do_judge_more(exp, shorter_is_better, "lengths", limit=10)
    assert more == 10 and Vote.objects.exclude(judge="").count() == before + 10
    with_judge = do_build_vote_dataset(exp.owner, [exp], Policy(), judges=True)
    assert with_judge.votes_read > Vote.objects.filter(experiment=exp, judge="").count()
    assert with_judge.policy["judges"] is True


def test_a_real_local_pairwise_judge_votes(exp):
    """training.rewards' pairwise judge on `tiny` (position-swapped, from token probabilities)."""
    judge = local_judge("tiny")
    n = do_judge_votes(exp, judge, "pairwise_judge:tiny")
    assert n > 0 and Vote.objects.filter(judge="pairwise_judge:tiny").count() == n
    (cal,) = calibration(exp, rounds=50)
    assert cal.items == n and 0.0 <= cal.percent <= 1.0
