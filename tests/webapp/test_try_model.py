"""Trying a model: the page offers a run's final model and checkpoints, the trial is sent to the `try`
queue once committed, only its owner sees it, and the worker answers each model (the tiny model for
real: a final model, a TRL-style checkpoint, our PPO's state-dict checkpoint, the base model)."""

from __future__ import annotations

import shutil

import pytest
import torch
from django.urls import reverse

from training import models
from webapp.experiments.models import Run, Trial, TrialAnswer
from webapp.workers.trying import do_answer_trial

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    out = []
    monkeypatch.setattr("webapp.experiments.actions.send_trial", out.append)
    return out


def saved_run(make_experiment, owner, name="exp", method="sft"):
    exp = make_experiment(owner, name=name, methods=[method])
    run = exp.runs.get()
    tiny = models.build_tiny()
    shutil.copytree(tiny, run.model_dir)
    ck = run.checkpoints_dir / "checkpoint-2"
    if method == "ppo":
        ck.mkdir(parents=True)
        model = models.load_model("tiny", torch.device("cpu"))
        torch.save(model.state_dict(), ck / "policy.pt")
    else:
        shutil.copytree(tiny, ck)
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED)
    run.refresh_from_db()
    return run


def post_trial(client, run, **extra):
    data = {"prompt": "What is 2 + 3? <b>bold</b>", "version": "final", "base": "on", "temperature": "0",
            "top_p": "1", "max_new_tokens": "6", "seed": "1", **extra}
    return client.post(reverse("experiments:run_try", args=[run.pk]), data)


def test_try_page_offers_final_model_and_checkpoints(alice_client, alice, make_experiment):
    run = saved_run(make_experiment, alice)
    html = alice_client.get(reverse("experiments:run_try", args=[run.pk])).content.decode()
    assert 'value="final"' in html and 'value="checkpoint-2"' in html
    assert reverse("experiments:run_try", args=[run.pk]) in alice_client.get(run.get_absolute_url()).content.decode()
    empty = make_experiment(alice, name="fresh").runs.get()
    assert "Nothing to try yet" in alice_client.get(reverse("experiments:run_try", args=[empty.pk])).content.decode()


def test_trial_is_sent_on_commit_and_answered_by_every_model(alice_client, alice, make_experiment, sent,
                                                              django_capture_on_commit_callbacks):
    run = saved_run(make_experiment, alice)
    other = saved_run(make_experiment, alice, name="other", method="ppo")
    with django_capture_on_commit_callbacks(execute=True):
        response = post_trial(alice_client, run, version="checkpoint-2", others=[str(other.pk)])
    trial = Trial.objects.get()
    assert response.status_code == 302 and response["Location"] == trial.get_absolute_url()
    assert sent == [trial.pk]
    labels = [a.label for a in trial.answers.all()]
    assert labels[0].endswith("checkpoint at step 2") and labels[1] == "base model · tiny" and "other" in labels[2]
    assert do_answer_trial(trial.pk) == "answered"
    answers = list(trial.answers.all())
    assert [a.state for a in answers] == ["done"] * 3, [a.error for a in answers]
    assert all(isinstance(a.text, str) and a.seconds is not None for a in answers)
    # greedy decoding: the same model (tiny everywhere here) gives the same text
    assert len({a.text for a in answers}) == 1
    status = alice_client.get(reverse("experiments:trial_status", args=[trial.pk])).json()
    assert status["active"] is False and [a["state"] for a in status["answers"]] == ["done"] * 3
    page = alice_client.get(trial.get_absolute_url()).content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page
    assert do_answer_trial(trial.pk) == "answered"  # again: nothing asked twice
    assert TrialAnswer.objects.filter(state="done").count() == 3


def test_ppo_checkpoint_loads_its_state_dict(alice_client, alice, make_experiment, sent):
    run = saved_run(make_experiment, alice, method="ppo")
    post_trial(alice_client, run, version="checkpoint-2", base="", temperature="0.9", top_p="0.9")
    trial = Trial.objects.get()
    answer = trial.answers.get()
    assert answer.weights_path.endswith("checkpoint-2/policy.pt") and answer.model_path == "tiny"
    do_answer_trial(trial.pk)
    answer.refresh_from_db()
    assert answer.state == "done", answer.error


def test_a_broken_model_fails_its_answer_only(alice_client, alice, make_experiment, sent):
    run = saved_run(make_experiment, alice)
    post_trial(alice_client, run)
    trial = Trial.objects.get()
    TrialAnswer.objects.filter(trial=trial, position=0).update(model_path="/nonexistent/model")
    do_answer_trial(trial.pk)
    states = list(trial.answers.values_list("state", "error"))
    assert states[0][0] == "failed" and "does not exist" in states[0][1] and states[1][0] == "done"


def test_limits_and_access(client, alice, bob, make_experiment, sent):
    run = saved_run(make_experiment, alice)
    others = [saved_run(make_experiment, alice, name=f"o{i}") for i in range(4)]
    client.force_login(alice)
    response = post_trial(client, run, others=[str(o.pk) for o in others])
    assert response.status_code == 200 and "At most 3 other runs" in response.content.decode()
    assert post_trial(client, run, temperature="5").status_code == 200
    assert post_trial(client, run, version="../../etc").status_code == 200  # not a choice
    assert not Trial.objects.exists()
    post_trial(client, run)
    trial = Trial.objects.get()
    client.force_login(bob)
    assert client.get(reverse("experiments:run_try", args=[run.pk])).status_code == 404
    assert post_trial(client, run).status_code == 404
    assert client.get(trial.get_absolute_url()).status_code == 404
    assert client.get(reverse("experiments:trial_status", args=[trial.pk])).status_code == 404
    run.experiment.shared_with.add(bob)  # a sharee may try it; the owner's trial stays the owner's
    assert client.get(reverse("experiments:run_try", args=[run.pk])).status_code == 200
    assert client.get(trial.get_absolute_url()).status_code == 404
    assert post_trial(client, run).status_code == 302
    assert Trial.objects.filter(owner=bob).count() == 1


def test_training_never_goes_to_the_try_queue(alice_client):
    from tests.webapp.conftest import form_data

    response = alice_client.post(reverse("experiments:new"), form_data(queue="try"))
    assert response.status_code == 200 and "for trying models" in response.content.decode()
