"""Sweeps through the API and the CLI: create an experiment with a sweep (the form's validation and limits,
errors named `sweep.trials`), read its settings, and read the sweep's state (trials per method, the best
trial, the compare page's best-of-budget verdicts); 404 for what has no sweep or is not the user's."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from test_sweeps_flow import sweep_experiment, train_queued

from ptlab_client.__main__ import main, sweep_lines
from webapp.api.models import ApiToken
from webapp.compare import loader
from webapp.experiments.actions import PRUNED, do_finish_run
from webapp.experiments.models import Experiment, Run

pytestmark = pytest.mark.django_db

NEW = {"name": "api sweep", "task": "arithmetic", "methods": ["dpo", "grpo"], "max_steps": 4, "eval_every": 2,
       "eval_prompts": 2, "eval_samples": 1, "max_new_tokens": 4}


def test_create_an_experiment_with_a_sweep(api, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/experiments", {**NEW, "sweep": {"trials": 3, "sampler": "random"}})
    assert r.status_code == 201, r.content
    body = r.json()
    exp = Experiment.objects.get(pk=body["id"])
    assert exp.sweep == {"trials": 3, "sampler": "random"}
    assert sorted((run["method"], run["trial"]) for run in body["runs"]) == [("dpo", 0), ("grpo", 0)]
    assert len(enqueued) == 2  # each method's first trial
    assert body["sweep"] == {"trials": 3, "sampler": "random", "prune": True, "startup_trials": 3, "seed": 0}
    assert api.get(f"/api/experiments/{exp.pk}").json()["sweep"]["trials"] == 3
    r = api.post("/api/experiments", {**NEW, "name": "tpe by default", "sweep": {"trials": 2}})
    assert r.status_code == 201 and r.json()["sweep"]["sampler"] == "tpe"
    plain = api.post("/api/experiments", {**NEW, "name": "no sweep"}).json()
    assert plain["sweep"] is None and {run["trial"] for run in plain["runs"]} == {None}
    no_trials = api.post("/api/experiments", {**NEW, "name": "0 trials", "sweep": {"trials": 0}}).json()
    assert no_trials["sweep"] is None  # as in the form: 0 trials, no sweep


@pytest.mark.parametrize("sweep, field", [
    ({"trials": 51}, "sweep.trials"),
    ({"trials": -1}, "sweep.trials"),
    ({"trials": "many"}, "sweep.trials"),
    ({"sampler": "random"}, "sweep.trials"),
    ({"trials": 2, "sampler": "grid"}, "sweep.sampler"),
    ({"trials": 2, "prune": False}, "sweep.prune"),
    (3, "sweep"),
])
def test_sweep_errors_are_named(api, sweep, field):
    error = api.post("/api/experiments", {**NEW, "sweep": sweep}).json()["error"]
    assert error["code"] == "validation_error" and field in error["fields"], error
    assert not Experiment.objects.exists()


def test_a_sweep_is_not_started_from_sft(api):
    r = api.post("/api/experiments", {**NEW, "methods": ["sft", "dpo"], "rl_from_sft": True, "sweep": {"trials": 2}})
    assert r.status_code == 400
    assert "A sweep tunes every method from the base model" in r.json()["error"]["fields"]["sweep.trials"][0]
    assert not Experiment.objects.exists()


def test_the_sweep_is_404_without_one_or_for_others(api, bob_api, alice, bob, make_experiment):
    swept = sweep_experiment(alice)
    plain = make_experiment(alice)
    assert api.get(f"/api/experiments/{swept.pk}/sweep").status_code == 200
    for path in (f"/api/experiments/{swept.pk}/sweep", f"/api/experiments/{plain.pk}/sweep",
                 "/api/experiments/999999/sweep"):
        assert bob_api.get(path).json()["error"]["code"] == "not_found"
    assert api.get(f"/api/experiments/{plain.pk}/sweep").json()["error"]["message"] == "No such sweep."
    swept.shared_with.add(bob)
    assert bob_api.get(f"/api/experiments/{swept.pk}/sweep").status_code == 200
    assert Client().get(f"/api/experiments/{swept.pk}/sweep").status_code == 401


def test_the_sweeps_trials_best_trial_and_verdicts(api, alice):
    exp = sweep_experiment(alice)  # DPO and PPO, 3 random trials each
    train_queued(exp)  # trial 0 of each method succeeds; trial 1 of each is queued
    dpo1 = exp.runs.get(method="dpo", trial=1)
    Run.objects.filter(pk=dpo1.pk).update(state=Run.State.RUNNING, attempts=1, log=f"{PRUNED} 10: below the median")
    dpo1.refresh_from_db()
    assert do_finish_run(dpo1, Run.State.CANCELLED)  # pruned: DPO's trial 2 is queued

    r = api.get(f"/api/experiments/{exp.pk}/sweep")
    assert r.status_code == 200, r.content
    sweep = r.json()
    assert sweep["settings"]["trials"] == 3 and sweep["settings"]["sampler"] == "random"
    assert sweep["validation_prompts"] == 5 and sweep["test_prompts"] == 5
    dpo, ppo = sweep["methods"]
    assert (dpo["method"], dpo["label"], dpo["budget"], dpo["searched"]) == ("dpo", "DPO", 3, ["learning_rate", "beta"])
    assert [(t["number"], t["state"], t["pruned"]) for t in dpo["trials"]] == [
        (0, "complete", False), (1, "pruned", True), (2, "running", False)]
    assert [t["state"] for t in ppo["trials"]] == ["complete", "running"]
    first = dpo["trials"][0]
    run0 = exp.runs.get(method="dpo", trial=0)
    assert first["run"] == run0.pk and first["run_state"] == "succeeded" and first["validation"] is not None
    assert first["params"] == {k: run0.config[k] for k in ("learning_rate", "beta")}
    assert (dpo["completed"], dpo["pruned"]) == (1, 1)
    assert dpo["best"]["run"] == run0.pk and dpo["best"]["validation"] == first["validation"]
    assert dpo["compute"]["steps"] >= 20

    while train_queued(exp):
        pass
    sweep = api.get(f"/api/experiments/{exp.pk}/sweep").json()
    page = loader.statistics(loader.experiment_runs(exp))["sweep"]  # what the compare page shows
    assert [(m["completed"], m["pruned"]) for m in sweep["methods"]] == [(2, 1), (3, 0)]
    for got, shown in zip(sweep["methods"], page["methods"], strict=True):
        assert got["best"] == shown["best"] and (got["completed"], got["pruned"]) == (shown["completed"], shown["pruned"])
        best = max((t for t in got["trials"] if t["state"] == "complete"), key=lambda t: t["validation"])
        assert best["run"] == got["best"]["run"]
        assert set(got["sensitivity"]) == set(got["searched"])
    assert [row["sentence"] for row in sweep["verdicts"]["rows"]] == [row["sentence"] for row in page["verdicts"]["rows"]]
    assert len(sweep["verdicts"]["rows"]) == 1

    lines = sweep_lines(sweep)
    assert lines[0].startswith(f"sweep of experiment {exp.pk}: 3 trials per method (random)")
    assert "DPO: 3/3 trials, 2 completed, 1 pruned" in lines
    header = next(line for line in lines if "learning_rate" in line and "beta" in line)
    assert header.split() == ["trial", "run", "state", "validation", "learning_rate", "beta"]
    assert any(line.split()[:3] == ["1", str(dpo1.pk), "pruned"] for line in lines)
    assert lines[-1].strip() == sweep["verdicts"]["rows"][0]["sentence"]


def test_the_cli_creates_a_sweep_and_prints_it(alice, live_server, tmp_path, capsys):
    token = ApiToken.issue(alice, "cli")[1]
    base = ["--url", live_server.url, "--token", token]
    spec = tmp_path / "exp.json"
    spec.write_text(json.dumps(NEW))
    assert main([*base, "create", str(spec), "--sweep-trials", "2", "--sweep-sampler", "random"]) == 0
    exp = Experiment.objects.get()
    assert f"created experiment {exp.pk} with 2 runs" in capsys.readouterr().out
    assert exp.sweep == {"trials": 2, "sampler": "random"}
    assert main([*base, "sweep", str(exp.pk)]) == 0
    out = capsys.readouterr().out
    assert "2 trials per method (random)" in out and "GRPO: 1/2 trials, 0 completed, 0 pruned" in out
    assert "best: - (no trial completed yet)" in out
    assert main([*base, "launch", str(spec), "--sweep-trials", "51"]) == 1
    assert "sweep.trials" in capsys.readouterr().err
    plain = Experiment.objects.create(owner=alice, name="plain", methods=["sft"])
    assert main([*base, "sweep", str(plain.pk)]) == 1
    assert "404" in capsys.readouterr().err


def test_the_schema_documents_the_sweep(client):
    spec = client.get("/api/openapi.json").json()
    assert "200" in spec["paths"]["/api/experiments/{id}/sweep"]["get"]["responses"]
    sweep_in = spec["components"]["schemas"]["SweepIn"]["properties"]
    assert (sweep_in["trials"]["minimum"], sweep_in["trials"]["maximum"]) == (0, 50)  # the form's bounds
    assert sweep_in["sampler"]["enum"] == ["tpe", "random"]
    assert "sweep" in spec["components"]["schemas"]["ExperimentOut"]["properties"]
