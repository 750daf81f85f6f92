"""The next round: from the leader (or picked contestants), a reward model on the vote dataset, RL runs that
wait for it and optimise it, DPO on the vote pairs, all from the picked model and measured like round 1;
the pages and their access."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from webapp.experiments.actions import do_finish_run
from webapp.experiments.models import Run
from webapp.ratings.arena import Arena
from webapp.ratings.demo import make_demo_experiment, simulate_votes
from webapp.ratings.models import BASE, Round, VoteDataset
from webapp.ratings.rounds import RoundError, do_start_round, leader, rounds_summary
from webapp.ratings.votesets import Policy, do_build_vote_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated(alice, bob, tmp_path):
    exp = make_demo_experiment(alice, name="rated", methods=("sft", "dpo", "grpo"), prompts=6, steps=(0, 10))
    for run in exp.runs.all():
        run.out_dir = str(tmp_path / f"run{run.pk}")
        run.save(update_fields=["out_dir"])
    simulate_votes(exp, [alice, bob], 60, seed=1)
    return exp


def logged_in(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_the_next_round_starts_from_the_leader_and_waits_for_its_reward_model(
        rated, alice, enqueued, django_capture_on_commit_callbacks):
    vote_set = do_build_vote_dataset(alice, [rated], Policy())
    top = leader(rated)
    assert top is not None and top != BASE
    with django_capture_on_commit_callbacks(execute=True):
        round_ = do_start_round(rated, vote_set, methods=("ppo", "grpo", "dpo"), by=alice)
    assert round_.number == 2 and round_.started_from == [top]
    runs = {r.method: r for r in round_.runs.all()}
    assert set(runs) == {"reward", "ppo", "grpo", "dpo"}
    picked = Run.objects.get(pk=int(top.split("@")[0]))
    model = str(picked.model_dir)
    reward = runs["reward"]
    assert reward.config["dataset"] == vote_set.dataset.spec() and reward.config["model"] == model
    assert reward.state == Run.State.QUEUED and round_.reward_model_run == reward
    for m in ("ppo", "grpo"):  # wait for the reward model; start from the pick; measured like round 1
        run = runs[m]
        assert run.state == Run.State.WAITING and run.depends_on == reward
        assert run.config["model"] == model and run.config["task"] == "arithmetic" and "dataset" not in run.config
        assert run.config["eval_prompts"] == rated.eval_prompts
    dpo = runs["dpo"]
    assert dpo.config["dataset"] == vote_set.dataset.spec() and dpo.config["eval_task"] == "arithmetic"
    assert dpo.state == Run.State.QUEUED and dpo.config["model"] == model
    assert {run_id for run_id, _ in enqueued} == {reward.pk, dpo.pk}
    # The reward model succeeds: the RL runs get it as their training signal, still from the picked model.
    Run.objects.filter(pk=reward.pk).update(state=Run.State.RUNNING)
    reward.refresh_from_db()
    assert do_finish_run(reward, Run.State.SUCCEEDED)
    ppo = Run.objects.get(pk=runs["ppo"].pk)
    assert ppo.state == Run.State.QUEUED and ppo.config["reward_model"] == str(reward.model_dir)
    assert ppo.config["model"] == model
    arena = Arena(rated)
    assert arena.label(f"{ppo.pk}@10") == f"Round 2: PPO from {picked.label.split(' ')[0]} #{picked.pk} (#{ppo.pk})"
    # Its configs load as training configs.
    from training.config import from_dict

    for run in (reward, dpo, ppo):
        from_dict(Run.objects.get(pk=run.pk).config)


def test_a_round_starts_only_from_final_models_and_its_own_votes(rated, alice):
    vote_set = do_build_vote_dataset(alice, [rated], Policy())
    run = rated.runs.first()
    with pytest.raises(RoundError, match="final model"):
        do_start_round(rated, vote_set, picks=[f"{run.pk}@0"])
    other = make_demo_experiment(alice, name="other", methods=("sft", "dpo"), prompts=2, steps=(0, 10))
    with pytest.raises(RoundError, match="another experiment"):
        do_start_round(other, vote_set)
    round_ = do_start_round(rated, vote_set, picks=[BASE], methods=("dpo",))
    assert [r.method for r in round_.runs.all()] == ["dpo"] and round_.runs.get().config["model"] == "tiny"


def test_rounds_summary_and_pages(rated, alice, bob):
    vote_set = do_build_vote_dataset(alice, [rated], Policy())
    round_ = do_start_round(rated, vote_set, methods=("ppo", "dpo"), by=alice)
    summary = rounds_summary(rated)
    assert [r["number"] for r in summary] == [1, 2]
    assert summary[1]["votes_cost"] == vote_set.votes and summary[1]["started_from"]
    assert summary[0]["runs"][0]["label"] == "Base model"
    assert {r["method"] for r in summary[1]["runs"]} == {"reward", "ppo", "dpo"}
    owner = logged_in(alice)
    page = owner.get(reverse("ratings:rounds", args=[rated.pk])).content.decode()
    assert 'id="round-2"' in page and "Start round 3" in page
    assert "Start the next round" in owner.get(reverse("ratings:leaderboard", args=[rated.pk])).content.decode()
    response = owner.post(reverse("ratings:start_round", args=[rated.pk]), {"methods": ["dpo"], "picks": [BASE]})
    assert response.status_code == 302
    assert Round.objects.filter(experiment=rated, number=3).exists()
    assert VoteDataset.objects.filter(experiment=rated).count() == 2  # built anew for that round
    # bob is not invited and not shared: 404 everywhere
    stranger = logged_in(bob)
    for url in (reverse("ratings:rounds", args=[rated.pk]), reverse("ratings:vote_datasets", args=[rated.pk]),
                reverse("ratings:vote_dataset_file", args=[vote_set.pk, "jsonl"])):
        assert stranger.get(url).status_code == 404
    assert stranger.post(reverse("ratings:start_round", args=[rated.pk]), {"methods": ["dpo"]}).status_code == 404
    assert round_.number == 2


def test_vote_dataset_page_builds_versions_and_serves_jsonl_and_parquet(rated, alice):
    owner = logged_in(alice)
    url = reverse("ratings:vote_datasets", args=[rated.pk])
    assert owner.get(url).status_code == 200
    response = owner.post(url, {"ties": "both", "both_bad": "tie", "disagree": "weight", "also": ""})
    assert response.status_code == 302
    vote_set = VoteDataset.objects.get(experiment=rated)
    assert vote_set.policy == {"ties": "both", "both_bad": "tie", "disagree": "weight", "judges": False}
    page = owner.get(url).content.decode()
    assert "v1" in page and "Parquet" in page
    jsonl = owner.get(reverse("ratings:vote_dataset_file", args=[vote_set.pk, "jsonl"]))
    assert jsonl.status_code == 200 and jsonl.content.count(b"\n") == vote_set.dataset.rows
    parquet = owner.get(reverse("ratings:vote_dataset_file", args=[vote_set.pk, "parquet"]))
    assert parquet.content[:4] == b"PAR1"
    assert owner.get(reverse("ratings:vote_dataset_file", args=[vote_set.pk, "csv"])).status_code == 404
    # the dataset's own page previews it like any other dataset
    assert owner.get(vote_set.dataset.get_absolute_url()).status_code == 200
    bad = owner.post(url, {"ties": "drop", "both_bad": "drop", "disagree": "keep", "also": "999999"})
    assert "experiments you own" in bad.content.decode()
