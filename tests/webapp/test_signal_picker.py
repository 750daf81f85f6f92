"""Signals chosen in the new-experiment form: one gold signal, a training signal per RL method, monitors; each
kind's parameters are fields; a reward model is a `reward` run the user can see (`run:<id>`)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from tests.webapp.conftest import form_data
from webapp.experiments.models import Experiment, Run


def field_html(response, name: str) -> str:
    html = response.content.decode()
    start = html.index(f'id="field-{name}"')
    end = html.find('<div class="field', start + 1)
    return html[start:end if end > 0 else None]


def post(client, **fields):
    return client.post(reverse("experiments:new"), form_data(methods=["sft", "grpo"], rl_from_sft=None, **fields))


def test_the_form_shows_pickers_with_each_kinds_parameters(alice_client):
    html = alice_client.get(reverse("experiments:new")).content.decode()
    assert 'name="gold_reward"' in html and 'name="grpo-reward"' in html and 'name="monitors-0"' in html
    assert 'name="sft-reward"' not in html  # SFT and DPO have no training signal
    assert 'name="gold_reward-numeric_match-tolerance"' in html  # a verifier's parameters, typed
    assert '<textarea name="gold_reward-judge-template"' in html  # a judge's editable prompt
    assert 'name="grpo-reward-reward_model-path"' in html and 'list="signal-model-choices"' in html
    assert 'name="grpo-gold_reward"' not in html and 'name="grpo-monitors"' not in html  # no raw JSON text


def test_a_verifier_as_gold_and_another_training_signal(alice_client):
    response = post(alice_client, **{
        "gold_reward": "numeric_match", "gold_reward-numeric_match-tolerance": "0.5",
        "grpo-reward": "length", "grpo-reward-length-target": "3", "grpo-reward-length-unit": "chars",
        "monitors-0": "valid_json", "monitors-1": "format", "monitors-1-name": "has_digit",
        "monitors-1-format-pattern": r"\d"})
    assert response.status_code == 302, response.content.decode()[:2000]
    exp = Experiment.objects.get()
    sft, grpo = exp.runs.get(method="sft").config, exp.runs.get(method="grpo").config
    gold = {"kind": "numeric_match", "tolerance": 0.5}
    monitors = ["valid_json", {"kind": "format", "name": "has_digit", "pattern": r"\d"}]
    assert sft["gold_reward"] == gold == grpo["gold_reward"] and sft["monitors"] == monitors == grpo["monitors"]
    assert grpo["reward"] == {"kind": "length", "target": 3, "unit": "chars"} and "reward" not in sft
    # cloning shows the same choices
    html = alice_client.get(reverse("experiments:clone", args=[exp.pk])).content.decode()
    assert '<option value="numeric_match" selected>' in html.split('name="gold_reward"')[1].split("</select>")[0]
    assert 'name="grpo-reward-length-target" value="3"' in html and 'value="has_digit"' in html


@pytest.mark.parametrize(("fields", "field", "text"), [
    ({"gold_reward": "judge", "gold_reward-judge-template": "Rate it."}, "gold_reward-judge-template",
     "must contain {completion}"),
    ({"grpo-reward": "length", "grpo-reward-length-unit": "lines"}, "grpo-reward-length-unit", "Select a valid"),
    ({"monitors-0": "valid_json", "monitors-0-valid_json-keys": "[oops"}, "monitors-0-valid_json-keys",
     "Not valid JSON"),
    ({"grpo-reward": "weighted_sum", "grpo-reward-weighted_sum-signals": '["exact_match"]',
      "grpo-reward-weighted_sum-weights": "[1, 2]"}, "grpo-reward-weighted_sum-weights", "has 2 weights"),
    ({"monitors-0": "length", "monitors-1": "length"}, "monitors-0", "share a name"),
    ({"monitors-0": "length", "monitors-0-name": "no spaces"}, "monitors-0-name", "must be letters"),
])
def test_a_bad_parameter_is_named_beside_its_field(alice_client, fields, field, text):
    response = post(alice_client, **fields)
    assert response.status_code == 200 and not Experiment.objects.exists()
    assert text in field_html(response, field), field_html(response, field)


def finished_reward_run(make_experiment, owner, artifacts) -> Run:
    exp = make_experiment(owner, methods=["sft"])
    run = exp.runs.get()
    run.method, run.state, run.out_dir = "reward", Run.State.SUCCEEDED, str(artifacts / "runs" / f"{run.pk}-ab")
    run.save()
    return run


def test_a_reward_run_the_user_can_see_is_a_training_signal(alice_client, alice, bob, make_experiment,
                                                           artifact_root):
    mine = finished_reward_run(make_experiment, alice, artifact_root)
    theirs = finished_reward_run(make_experiment, bob, artifact_root)
    page = alice_client.get(reverse("experiments:new")).content.decode()
    assert f'<option value="run:{mine.pk}">' in page and f'"run:{theirs.pk}"' not in page
    refused = post(alice_client, **{"grpo-reward": "reward_model", "grpo-reward-reward_model-path": f"run:{theirs.pk}"})
    assert "Not a model you can use" in field_html(refused, "grpo-reward-reward_model-path")
    missing = post(alice_client, **{"grpo-reward": "reward_model", "grpo-reward-reward_model-path": "run:999999"})
    def errors(response):
        return field_html(response, "grpo-reward-reward_model-path").split('<ul class="errorlist">')[1]
    assert errors(missing) == errors(refused)  # nothing tells a missing run from another user's
    ok = post(alice_client, **{"gold_reward": "exact_match", "grpo-reward": "reward_model",
                               "grpo-reward-reward_model-path": f"run:{mine.pk}"})
    assert ok.status_code == 302, ok.context["form"].errors
    exp = Experiment.objects.exclude(pk__in=[mine.experiment_id, theirs.experiment_id]).get()
    assert exp.hyperparams["grpo"]["reward"] == {"kind": "reward_model", "path": f"run:{mine.pk}"}
    config = exp.runs.get(method="grpo").config
    assert config["reward"] == {"kind": "reward_model", "path": str(mine.model_dir)}  # what the worker loads


def test_the_api_takes_experiment_level_gold_and_monitors(alice_client, alice):
    from webapp.api.models import ApiToken

    token = ApiToken.issue(alice, "tests")[1]
    body = {"name": "api", "task": "arithmetic", "methods": ["sft", "ppo"], "gold_reward": "exact_match",
            "monitors": [{"kind": "length", "target": 4}], "hyperparams": {"ppo": {"reward": "numeric_match"}}}
    response = alice_client.post(reverse("api:experiments"), json.dumps(body), content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 201, response.content
    runs = {r.method: r.config for r in Experiment.objects.get().runs.all()}
    assert runs["sft"]["gold_reward"] == runs["ppo"]["gold_reward"] == "exact_match"
    assert runs["ppo"]["monitors"] == [{"kind": "length", "target": 4}] and runs["ppo"]["reward"] == "numeric_match"
    bad = {**body, "name": "bad", "gold_reward": {"kind": "numeric_match", "tolerance": "x"}}
    response = alice_client.post(reverse("api:experiments"), json.dumps(bad), content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["gold_reward-numeric_match-tolerance"]
    bad = {**body, "name": "bad", "monitors": [{"kind": "length", "colour": "red"}]}
    response = alice_client.post(reverse("api:experiments"), json.dumps(bad), content_type="application/json",
                                 HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400 and "colour: unknown parameter" in response.json()["error"]["fields"]["monitors"][0]


def test_a_reward_run_shows_its_held_out_accuracy_and_how_to_use_it(alice_client, alice, make_experiment,
                                                                    artifact_root):
    from webapp.experiments.models import Metric

    run = finished_reward_run(make_experiment, alice, artifact_root)
    Metric.objects.bulk_create([Metric(run=run, step=s, name="eval/accuracy", value=v, wall_time=0.0)
                                for s, v in ((0, 0.5), (4, 0.875))])
    html = alice_client.get(reverse("experiments:run", args=[run.pk])).content.decode()
    assert '<strong class="num" id="pairwise-accuracy">0.875</strong>' in html
    assert f"run:{run.pk}" in html and "Held-out pairwise accuracy" in html


def test_the_form_trains_a_reward_model(alice_client):
    response = alice_client.post(reverse("experiments:new"), form_data(methods=["reward"], rl_from_sft=None))
    assert response.status_code == 302, response.context["form"].errors
    run = Experiment.objects.get().runs.get()
    assert run.method == "reward" and run.config["method"] == "reward" and "reward" not in run.config


def test_a_judges_edited_prompt_is_stored_with_the_run(alice_client):
    template = "Is this answer right? {prompt} -> {completion}\nReply with one digit."
    sent = template.replace("\n", "\r\n")  # as a browser sends a textarea
    response = post(alice_client, **{"monitors-0": "judge", "monitors-0-name": "judged",
                                     "monitors-0-judge-template": sent, "monitors-0-judge-model": "tiny"})
    assert response.status_code == 302, response.context["form"].errors
    (monitor,) = Experiment.objects.get().runs.get(method="grpo").config["monitors"]
    assert monitor == {"kind": "judge", "name": "judged", "template": template}
    default = post(alice_client, **{"name": "again", "gold_reward": "pairwise_judge"})
    assert default.status_code == 302, default.context["form"].errors
    gold = Experiment.objects.get(name="again").runs.get(method="sft").config["gold_reward"]
    assert gold["kind"] == "pairwise_judge" and "{first}" in gold["template"]  # stored even at its default


def test_the_compare_page_takes_an_experiment_with_a_reward_model_run(alice_client, alice, make_experiment):
    from webapp.compare.demo import fill_run
    from webapp.experiments.models import Metric

    exp = make_experiment(alice, methods=["sft", "reward"])
    sft, rm = exp.runs.get(method="sft"), exp.runs.get(method="reward")
    fill_run(sft, steps=4, eval_every=2)
    Metric.objects.bulk_create([Metric(run=rm, step=s, name="eval/accuracy", value=0.5 + s / 10, wall_time=1e9 + s)
                                for s in (0, 2, 4)])
    rm.state = Run.State.SUCCEEDED
    rm.save()
    assert alice_client.get(reverse("compare:experiment", args=[exp.pk])).status_code == 200
    data = alice_client.get(reverse("compare:experiment_data", args=[exp.pk])).json()
    groups = {g["group"]: g for g in data["summary"]["groups"]}
    assert set(groups) == {"sft", "reward"} and groups["reward"]["label"] == "Reward model"
