"""Hostile users and hostile files (issue 13): quotas, models by reference, exports, imports, input
hardening, the Workers page and production settings. One test (or parameter) per finding of the probe."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import form_data
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from webapp.experiments.methods import METHODS
from webapp.experiments.models import Experiment, Run, Worker
from webapp.ratings.demo import make_demo_experiment, simulate_votes
from webapp.reports.importing import ReportError, do_import_report
from webapp.reports.jobs import do_run_import_job
from webapp.reports.models import ImportJob
from webapp.reports.report import build_report

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
NEW = {"name": "api exp", "task": "arithmetic", "methods": ["sft", "grpo"], "max_steps": 4, "eval_every": 2,
       "eval_prompts": 2, "eval_samples": 1, "max_new_tokens": 4}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


# --- 1. quotas and limits ------------------------------------------------------------------------------

def test_duplicate_methods_are_refused_and_a_huge_list_creates_nothing(api, alice_client):
    error = error_of(api.post("/api/experiments", {**NEW, "methods": ["sft"] * 2000}), 400)
    assert f"at most {len(METHODS)} items" in " ".join(error["fields"]["methods"])  # the declared schema
    error = error_of(api.post("/api/experiments", {**NEW, "methods": ["sft", "sft"]}), 400)
    assert "at most once" in " ".join(error["fields"]["methods"])  # the form
    response = alice_client.post(reverse("experiments:new"), form_data(methods=["sft", "sft"]))
    assert response.status_code == 200 and "Each method at most once" in response.content.decode()
    assert not Run.objects.exists()


def test_a_body_over_the_size_limit_gets_the_json_error_shape(api, settings):
    body = json.dumps({**NEW, "methods": ["sft"] * 150_000}).encode()
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    error = error_of(api.post("/api/experiments", raw=body), 413)
    assert error["code"] == "body_too_large" and str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in error["message"]
    assert not Experiment.objects.exists()


def test_runs_per_experiment_limit_names_the_limit_and_the_value(api, settings):
    settings.PTLAB_MAX_RUNS_PER_EXPERIMENT = 3
    error = error_of(api.post("/api/experiments", {**NEW, "methods": ["sft", "dpo"], "seeds": 2}), 429)
    assert "At most 3 runs per experiment" in error["message"] and "this one has 4" in error["message"]
    assert "PTLAB_MAX_RUNS_PER_EXPERIMENT" in error["message"] and not Run.objects.exists()


def test_queued_runs_per_user_limit(api, alice_client, settings):
    settings.PTLAB_MAX_QUEUED_RUNS_PER_USER = 3
    assert api.post("/api/experiments", NEW).status_code == 201  # 2 runs queued
    error = error_of(api.post("/api/experiments", NEW), 429)
    assert "At most 3 runs waiting or queued per user" in error["message"] and "you have 2" in error["message"]
    response = alice_client.post(reverse("experiments:new"), form_data(methods=["sft", "dpo"]))
    assert response.status_code == 200 and "At most 3 runs waiting or queued" in response.content.decode()
    Run.objects.update(state=Run.State.SUCCEEDED)  # they ran: room again
    assert api.post("/api/experiments", NEW).status_code == 201


def test_experiments_per_hour_limit_applies_to_forms_api_and_imports(api, alice, settings):
    settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR = 1
    assert api.post("/api/experiments", NEW).status_code == 201
    error = error_of(api.post("/api/experiments", NEW), 429)
    assert "At most 1 new experiments per hour" in error["message"] and "you created 1" in error["message"]
    Run.objects.update(state=Run.State.SUCCEEDED)
    doc = build_report(Experiment.objects.get())
    with pytest.raises(ReportError, match="PTLAB_MAX_EXPERIMENTS_PER_HOUR"):
        do_import_report(doc, alice)
    settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR = 2  # an import keeps its report's date; it counts when imported
    doc["experiment"]["created"] = "2020-01-01T00:00:00+00:00"
    assert do_import_report(doc, alice).created.year == 2020
    with pytest.raises(ReportError, match="you created 2"):
        do_import_report(doc, alice)


def test_import_points_limit(alice, bob, settings):
    exp = make_demo_experiment(alice, prompts=4, steps=(0, 10))
    doc = build_report(exp)
    settings.PTLAB_MAX_IMPORT_POINTS = 10
    with pytest.raises(ReportError, match=r"at most 10 \(PTLAB_MAX_IMPORT_POINTS\)"):
        do_import_report(doc, bob)
    assert not Experiment.objects.filter(owner=bob).exists()


def test_upload_rows_limit(alice_client, settings):
    settings.PTLAB_MAX_UPLOAD_ROWS = 2
    rows = b"".join(b'{"prompt": "p%d", "completion": "c"}\n' % n for n in range(3))
    response = alice_client.post(reverse("experiments:new"), form_data(
        task="upload", methods=["sft"], rl_from_sft=None, dataset=SimpleUploadedFile("d.jsonl", rows)))
    assert response.status_code == 200 and "too many rows (at most 2) (PTLAB_MAX_UPLOAD_ROWS)" in response.content.decode()


# --- 2. models by reference, not by path --------------------------------------------------------------

def finished_sft_run(owner, make_experiment) -> Run:
    exp = make_experiment(owner, name="alice private")
    run = exp.runs.get()
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED)
    run.refresh_from_db()
    return run


@pytest.mark.parametrize("model", ["/root", "/nonexistent", "../etc", "~/models", "/tmp/../root", "tiny/../../x",
                                   "C:\\models", "run:999999", "org/name/extra", "/"])
def test_paths_and_unknown_references_are_refused_with_one_message(api, model):
    error = error_of(api.post("/api/experiments", {**NEW, "base_model": model}), 400)
    message = error["fields"]["base_model"][0]
    assert message.startswith("Not a model you can use.") and (len(model) < 2 or model not in message)
    assert not Run.objects.exists()


def test_another_users_run_folder_or_id_is_refused(alice, bob_api, make_experiment):
    run = finished_sft_run(alice, make_experiment)
    for model in (str(run.model_dir), run.out_dir, f"run:{run.pk}"):
        error = error_of(bob_api.post("/api/experiments", {**NEW, "base_model": model}), 400)
        assert error["fields"]["base_model"][0].startswith("Not a model you can use.")
    error = error_of(bob_api.post("/api/experiments", {**NEW, "methods": ["grpo"], "hyperparams": {
        "grpo": {"reward_model": str(run.model_dir)}}}), 400)
    assert error["fields"]["grpo-reward_model"][0].startswith("Not a model you can use.")


def test_own_run_by_reference_and_data_root_paths_are_accepted(api, alice, make_experiment, settings, tmp_path):
    run = finished_sft_run(alice, make_experiment)
    response = api.post("/api/experiments", {**NEW, "base_model": f"run:{run.pk}"})
    assert response.status_code == 201, response.content
    created = Run.objects.filter(experiment_id=response.json()["id"])
    assert {r.config["model"] for r in created} == {str(run.model_dir)}  # what the worker loads
    assert response.json()["base_model"] == f"run:{run.pk}"
    assert all(r["config"]["model"] == f"run:{run.pk}" for r in response.json()["runs"])  # what users see

    root = tmp_path / "models"
    (root / "llama").mkdir(parents=True)
    settings.PTLAB_DATA_ROOTS = [root]
    assert api.post("/api/experiments", {**NEW, "base_model": str(root / "llama")}).status_code == 201
    assert api.post("/api/experiments", {**NEW, "base_model": "HuggingFaceTB/SmolLM2-135M"}).status_code == 201
    (root / "escape").symlink_to("/root")
    error = error_of(api.post("/api/experiments", {**NEW, "base_model": str(root / "escape")}), 400)
    assert error["fields"]["base_model"][0].startswith("Not a model you can use.")


def test_reports_and_the_api_do_not_expose_artifact_paths(api, alice, alice_client, make_experiment, settings):
    run = finished_sft_run(alice, make_experiment)
    response = api.post("/api/experiments", {**NEW, "base_model": f"run:{run.pk}", "methods": ["sft"]})
    exp = Experiment.objects.get(pk=response.json()["id"])
    root = str(settings.ARTIFACT_ROOT)
    exp.runs.update(error=f"model folder {run.model_dir} has no config.json", log=f"loading {run.model_dir}")
    assert root not in json.dumps(api.get(f"/api/experiments/{exp.pk}").json())
    for r in exp.runs.all():
        assert root not in json.dumps(api.get(f"/api/runs/{r.pk}").json())
        assert root not in alice_client.get(reverse("experiments:run", args=[r.pk])).content.decode()
    for url in (reverse("experiments:detail", args=[exp.pk]), reverse("experiments:status", args=[exp.pk])):
        assert root not in alice_client.get(url).content.decode()
    for fmt in ("json", "md", "csv"):
        assert root not in alice_client.get(reverse("reports:export", args=[exp.pk, fmt])).content.decode()


# --- 3. exports ----------------------------------------------------------------------------------------

FORMULA = "=cmd|' /C calc'!A0"


def test_csv_cells_that_start_like_a_formula_are_neutralised(alice, alice_client, bob):
    exp = make_demo_experiment(alice, name=FORMULA, prompts=3, steps=(0, 10))
    simulate_votes(exp, [alice], 4)
    for fmt in ("csv", "votes.csv"):
        body = alice_client.get(reverse("reports:export", args=[exp.pk, fmt])).content.decode()
        rows = list(csv.reader(io.StringIO(body)))[1:]
        assert rows and all(row[0] == "'" + FORMULA for row in rows)
        for row in rows:
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
                if cell.startswith("-"):
                    float(cell)  # a negative number stays a number


def test_markdown_escapes_html(alice, alice_client):
    exp = make_demo_experiment(alice, name="<script>alert(1)</script><img src=x onerror=alert(2)>", prompts=2,
                               steps=(0, 10))
    text = alice_client.get(reverse("reports:export", args=[exp.pk, "md"])).content.decode()
    assert "<script>" not in text and "<img" not in text and "&lt;script&gt;" in text


# --- 6. imports that break pages -----------------------------------------------------------------------

@pytest.fixture
def report(alice):
    exp = make_demo_experiment(alice, prompts=3, steps=(0, 10))
    simulate_votes(exp, [alice], 6)
    doc = build_report(exp)
    for v in doc["votes"]:
        v["rater"] = "someone-elsewhere"
    return doc


def _set(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@pytest.mark.parametrize("path, value, where", [
    (("runs", 0, "config"), ["a"], "$.runs[0].config"),
    (("runs", 0, "latest"), "high", "$.runs[0].latest"),
    (("leaderboard",), ["rows"], "$.leaderboard"),
    (("environment",), "linux", "$.environment"),
    (("version",), -1, "$.version"),
    (("version",), True, "$.version"),
    (("runs", 0, "method"), "magic", "$.runs[0].method"),
    (("runs", 0, "state"), "exploded", "$.runs[0].state"),
    (("runs", 0, "state"), "running", "$.runs[0].state"),
    (("runs", 0, "state"), "queued", "$.runs[0].state"),
    (("votes", 0, "outcome"), "bogus", "$.votes[0].outcome"),
    (("experiment", "name"), "a\x00b", "$.experiment.name"),
    (("runs", 0, "seed"), 2**70, "$.runs[0].seed"),
    (("experiment", "seeds"), 2**70, "$.experiment.seeds"),
    (("experiment", "max_steps"), -5, "$.experiment.max_steps"),
    (("runs", 0, "key"), ["a"], "$.runs[0].key"),
    (("votes", 0, "rater"), "alice", "$.votes[0].rater"),
    (("votes", 0, "rater"), "ALICE", "$.votes[0].rater"),
    (("metrics",), [], "$.metrics"),
    (("samples",), {"nope": []}, "$.samples.nope"),
])
def test_a_bad_import_is_refused_with_its_json_path(report, bob, path, value, where):
    with pytest.raises(ReportError) as info:
        do_import_report(_set(report, path, value), bob)
    assert info.value.path == where or str(info.value).startswith(where), str(info.value)
    assert not Experiment.objects.filter(owner=bob).exists()


def test_leaderboard_rows_as_a_string_is_not_shown(report, bob):
    doc = _set(report, ("leaderboard", "rows"), "oops")
    copy_ = do_import_report(doc, bob)
    client = Client()
    client.force_login(bob)
    for fmt in ("html", "json", "md", "csv", "votes.csv"):
        assert client.get(reverse("reports:export", args=[copy_.pk, fmt])).status_code == 200


def test_depends_on_cycle_is_refused(report, bob):
    doc = copy.deepcopy(report)
    a, b = doc["runs"][0], doc["runs"][1]
    a["depends_on"], b["depends_on"] = b["key"], a["key"]
    with pytest.raises(ReportError, match="cycle"):
        do_import_report(doc, bob)


def test_imported_runs_are_never_queued(report, bob, enqueued):
    copy_ = do_import_report(report, bob)
    assert not enqueued and not copy_.runs.filter(state__in=Run.ACTIVE_STATES).exists()


# --- 7. 500 instead of 4xx -----------------------------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000


def test_deeply_nested_json_is_a_4xx_everywhere(api, alice_client, bob):
    body = ('{"name": ' + DEEP + "}").encode()
    assert error_of(api.post("/api/experiments", raw=body), 400)["code"] == "invalid_json"
    line = ('{"prompt": ' + DEEP + ', "completion": "c"}\n').encode()
    response = alice_client.post(reverse("experiments:new"), form_data(
        task="upload", methods=["sft"], rl_from_sft=None, dataset=SimpleUploadedFile("d.jsonl", line)))
    assert response.status_code == 200 and "nested deeper than" in response.content.decode()
    response = alice_client.post(reverse("reports:import"), {"file": SimpleUploadedFile("r.json", DEEP.encode())})
    job = ImportJob.objects.get()
    assert response.status_code == 302 and do_run_import_job(job.pk) == "failed"
    assert "nested deeper than" in alice_client.get(response["Location"]).content.decode()


@pytest.mark.parametrize("steps", [-5, 10**30, 2**70])
def test_out_of_range_steps_are_field_errors_when_every_method_overrides_them(api, alice_client, steps):
    body = {**NEW, "max_steps": steps, "hyperparams": {"sft": {"max_steps": 5}, "grpo": {"max_steps": 5}}}
    response = api.post("/api/experiments", body)
    assert response.status_code == 400 and "max_steps" in response.json()["error"]["fields"]
    data = form_data(max_steps=str(steps), **{f"{m}-max_steps": "5" for m in ("sft", "dpo", "ppo", "grpo", "rloo")})
    response = alice_client.post(reverse("experiments:new"), data)
    assert response.status_code == 200 and "must be between 1 and 1000000" in response.content.decode()
    response = alice_client.post(reverse("experiments:new"), form_data(**{"sft-max_steps": str(steps)}))
    assert response.status_code == 200 and "must be between 1 and 1000000" in response.content.decode()
    assert not Run.objects.exists()


def test_lone_surrogate_is_a_field_error_and_text_is_nfc(api):
    error = error_of(api.post("/api/experiments", raw=b'{"name": "a\\ud800b", "methods": ["sft"]}'), 400)
    assert "unicode" in error["fields"]["name"][0].lower()
    response = api.post("/api/experiments", {**NEW, "name": "Cafe\u0301"})
    assert response.status_code == 201 and response.json()["name"] == "Caf\u00e9"


def test_an_object_as_name_is_refused(api):
    error = error_of(api.post("/api/experiments", {**NEW, "name": {"a": 1}}), 400)
    assert "name" in error["fields"] and not Experiment.objects.exists()


def test_jsonl_with_bom_and_a_raw_line_separator_inside_a_string(alice_client):
    text = '\ufeff{"prompt": "a\u2028b", "completion": "c"}\n{"prompt": "d", "completion": "e"}\n'
    response = alice_client.post(reverse("experiments:new"), form_data(
        task="upload", methods=["sft"], rl_from_sft=None,
        dataset=SimpleUploadedFile("d.jsonl", text.encode("utf-8"))))
    assert response.status_code == 302, response.content.decode()[-3000:]


# --- 8. smaller ----------------------------------------------------------------------------------------

def test_workers_page_names_other_users_experiments_only_to_those_who_may_see_them(alice, bob, make_experiment):
    exp = make_experiment(alice, name="alice secret project")
    Worker.objects.create(hostname="celery@gpu1", current_run=exp.runs.get())
    client = Client()
    client.force_login(bob)
    page = client.get(reverse("experiments:workers")).content.decode()
    assert "alice secret project" not in page and "another user's run" in page
    client.force_login(alice)
    assert "alice secret project" in client.get(reverse("experiments:workers")).content.decode()
    exp.shared_with.add(bob)
    client.force_login(bob)
    assert "alice secret project" in client.get(reverse("experiments:workers")).content.decode()


def _django(args: list[str], **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("SECRET_KEY", "DEBUG", "PTLAB_ALLOW_DEV_KEY", "PTLAB_HTTPS", "DATABASE_URL",
                          "DJANGO_ALLOW_ASYNC_UNSAFE")}  # the browser tests set it in this process
    return subprocess.run([sys.executable, *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


def test_refuses_to_start_with_debug_off_and_the_development_key():
    done = _django(["manage.py", "check"], DEBUG="0")
    assert done.returncode != 0 and "SECRET_KEY is unset" in done.stderr
    assert _django(["manage.py", "check"], DEBUG="1").returncode == 0


# The production settings documented in the README ("Production").
PRODUCTION = {"DEBUG": "0", "SECRET_KEY": "x7#kq2!v9Lm@p4Rz8&wN3s$Yt6Ub1Hc5Jd0Fg-Ae" * 2, "PTLAB_HTTPS": "1",
              "ALLOWED_HOSTS": "ptlab.example.org"}


def test_check_deploy_with_the_documented_production_settings_prints_no_warning():
    done = _django(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNINGS" not in done.stdout + done.stderr and "security.W" not in done.stdout + done.stderr
    readme = (ROOT / "README.md").read_text()
    assert "PTLAB_HTTPS=1" in readme and "SECRET_KEY" in readme


def test_every_page_has_a_content_security_policy(alice_client):
    response = alice_client.get(reverse("experiments:list"))
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "object-src 'none'" in policy and "frame-ancestors 'none'" in policy


# --- the schema, generated from the endpoints' declared types -------------------------------------------

def test_openapi_is_generated_from_the_declared_types_and_bounds_what_the_views_bound(client):
    from webapp.api import params
    from webapp.api.ninja_api import api

    spec = client.get("/api/openapi.json").json()
    for path, kind in (("/api/experiments", "experiments"), ("/api/runs/{id}/metrics", "metrics"),
                       ("/api/runs/{id}/samples", "samples")):
        limit = next(p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "limit")
        assert limit["schema"]["maximum"] == params.MAX_LIMIT[kind] and limit["schema"]["minimum"] == 1
    new = spec["components"]["schemas"]["NewExperiment"]
    assert new["properties"]["name"]["minLength"] == 1 and new["properties"]["methods"]["minItems"] == 1
    assert set(new["required"]) == {"name", "task", "methods"}
    assert api.get_openapi_schema(path_prefix="/api")["paths"].keys() == spec["paths"].keys()


@pytest.mark.parametrize("body, field", [({**NEW, "name": ""}, "name"), ({**NEW, "methods": []}, "methods")])
def test_empty_name_or_methods_are_refused_by_the_schema(api, body, field):
    assert field in error_of(api.post("/api/experiments", body), 400)["fields"]
    assert "limit" in error_of(api.get("/api/experiments", limit=1001), 400)["fields"]
