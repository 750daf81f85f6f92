"""The REST API: every endpoint's happy path, another user's object (404), bad input (field errors) and
no token (401); tokens and their page; CSRF for session-authenticated writes."""

from __future__ import annotations

import json

import pytest
from conftest import Api
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from webapp.api.models import ApiToken, hash_token
from webapp.experiments.models import Experiment, Metric, Run, Sample
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.models import Invitation, Vote

pytestmark = pytest.mark.django_db

NEW = {"name": "api exp", "task": "arithmetic", "methods": ["sft", "grpo"], "max_steps": 4, "eval_every": 2,
       "eval_prompts": 2, "eval_samples": 1, "max_new_tokens": 4, "hyperparams": {"sft": {"max_steps": 6}}}


@pytest.fixture
def exp(alice, make_experiment):
    e = make_experiment(alice, methods=["sft", "dpo"])
    run = e.runs.get(method="sft")
    Metric.objects.bulk_create([Metric(run=run, step=s, name=n, value=s / 10, wall_time=1.0)
                                for s in range(0, 30) for n in ("eval/reward", "eval/kl", "train/loss")])
    Sample.objects.bulk_create([Sample(run=run, step=s, prompt_id=p, prompt=f"q{p}", completion="a", reward=1.0)
                                for s in (0, 10) for p in range(3)])
    return e


def error_of(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return body["error"]


# --- tokens ------------------------------------------------------------------------------------------

def test_token_page_creates_shows_once_and_revokes(alice_client, alice):
    r = alice_client.post("/accounts/tokens/", {"name": "sweeps"})
    assert r.status_code == 200
    token = r.context["created"]
    assert token.startswith("ptl_") and token.encode() in r.content
    row = ApiToken.objects.get(user=alice)
    assert row.key_hash == hash_token(token) and token not in (row.key_hash, row.prefix)
    assert token.encode() not in alice_client.get("/accounts/tokens/").content  # shown once
    assert Api(token).get("/api/experiments").status_code == 200
    assert alice_client.post(f"/accounts/tokens/{row.pk}/revoke/").status_code == 302
    error_of(Api(token).get("/api/experiments"), 401)


def test_token_page_other_users_token_is_404(client, bob, alice):
    row, _ = ApiToken.issue(alice, "x")
    client.force_login(bob)
    assert client.post(f"/accounts/tokens/{row.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=row.pk).revoked_at is None


def test_token_page_needs_login(client):
    assert client.get("/accounts/tokens/").status_code == 302


# --- auth --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/experiments", "/api/experiments/1", "/api/experiments/1/runs",
                                  "/api/runs/1", "/api/runs/1/metrics", "/api/runs/1/samples",
                                  "/api/experiments/1/leaderboard", "/api/experiments/1/rate/next"])
def test_no_token_is_401(client, path):
    r = client.get(path)
    assert error_of(r, 401)["code"] == "not_authenticated"
    assert r["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/api/experiments", "/api/experiments/1/cancel", "/api/runs/1/cancel",
                                  "/api/experiments/1/votes"])
def test_no_token_post_is_401(client, path):
    error_of(client.post(path, "{}", content_type="application/json"), 401)


def test_bad_tokens_are_401(db):
    assert error_of(Api("nope").get("/api/experiments"), 401)["code"] == "invalid_token"
    r = Client().get("/api/experiments", HTTP_AUTHORIZATION="Basic abc")
    assert error_of(r, 401)["code"] == "bad_authorization_header"


def test_inactive_user_token_is_401(alice):
    _, token = ApiToken.issue(alice, "x")
    alice.is_active = False
    alice.save()
    error_of(Api(token).get("/api/experiments"), 401)


def test_session_reads_work_and_writes_need_csrf(alice, exp):
    c = Client(enforce_csrf_checks=True)
    c.force_login(alice)
    assert c.get("/api/experiments").status_code == 200
    r = c.post(f"/api/experiments/{exp.pk}/cancel", "{}", content_type="application/json")
    assert error_of(r, 403)["code"] == "csrf_failed"
    c.get("/accounts/tokens/")  # sets the csrftoken cookie
    r = c.post(f"/api/experiments/{exp.pk}/cancel", "{}", content_type="application/json",
               HTTP_X_CSRFTOKEN=c.cookies["csrftoken"].value)
    assert r.status_code == 200


def test_token_posts_are_csrf_exempt(alice, exp):
    token = ApiToken.issue(alice, "x")[1]
    c = Client(enforce_csrf_checks=True)
    r = c.post(f"/api/experiments/{exp.pk}/cancel", "{}", content_type="application/json",
               HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 200


def test_unknown_endpoint_and_wrong_method_are_json(api):
    assert error_of(api.get("/api/nothing/here"), 404)["code"] == "not_found"
    r = api.client.delete("/api/experiments", **api.headers)
    assert error_of(r, 405)["code"] == "method_not_allowed"


# --- schema and docs -----------------------------------------------------------------------------------

def test_schema_and_docs(client):
    spec = client.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/api/experiments" in spec["paths"]
    page = client.get("/api/docs/")
    assert page.status_code == 200 and b"/api/runs/{id}/metrics" in page.content and b"cdn" not in page.content
    assert client.get("/api/").json()["schema"] == "/api/openapi.json"


# --- experiments -----------------------------------------------------------------------------------------

def test_create_experiment(api, alice, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        r = api.post("/api/experiments", NEW)
    assert r.status_code == 201, r.content
    body = r.json()
    e = Experiment.objects.get(pk=body["id"])
    assert e.owner == alice and e.methods == ["sft", "grpo"] and e.hyperparams["sft"]["max_steps"] == 6
    assert [run["method"] for run in body["runs"]] == ["sft", "grpo"]
    assert len(enqueued) == 2
    assert e.runs.get(method="sft").config["max_steps"] == 6


def test_create_experiment_flat_method_settings(api):
    r = api.post("/api/experiments", {**NEW, "hyperparams": {}, "grpo-beta": 0.05})
    assert r.status_code == 201, r.content
    assert Experiment.objects.get().hyperparams["grpo"]["beta"] == 0.05


def test_create_experiment_with_training_options(api):
    options = {"sft": {"gradient_accumulation_steps": 2, "lr_scheduler": "cosine", "warmup_steps": 1,
                       "precision": "fp32", "max_completion_length": 6},
               "grpo": {"loss_type": "dr_grpo", "scale_rewards": "none", "epsilon_high": 0.28, "generation_steps": 2}}
    r = api.post("/api/experiments", {**NEW, "hyperparams": options})
    assert r.status_code == 201, r.content
    e = Experiment.objects.get()
    sft, grpo = e.runs.get(method="sft").config, e.runs.get(method="grpo").config
    assert sft["gradient_accumulation_steps"] == 2 and sft["lr_scheduler"] == "cosine"
    assert grpo["loss_type"] == "dr_grpo" and grpo["generation_steps"] == 2 and grpo["epsilon_high"] == 0.28


@pytest.mark.parametrize("change, field", [
    ({"hyperparams": {"grpo": {"gradient_accumulation_steps": 3}}}, "grpo-gradient_accumulation_steps"),
    ({"hyperparams": {"grpo": {"scale_rewards": "yes"}}}, "grpo-scale_rewards"),
    ({"hyperparams": {"sft": {"packing": True}}}, "sft-packing"),
    ({"name": ""}, "name"),
    ({"methods": ["nope"]}, "methods"),
    ({"methods": "sft,dpo"}, "methods"),
    ({"task": "nope"}, "task"),
    ({"seeds": 9}, "seeds"),
    ({"max_steps": 0}, "max_steps"),
    ({"max_steps": "many"}, "max_steps"),
    ({"max_steps": 10**30}, "max_steps"),
    ({"eval_samples": 100}, "eval_samples"),
    ({"queue": "bad queue!"}, "queue"),
    ({"hyperparams": {"grpo": {"beta": -1}}}, "grpo-beta"),
    ({"hyperparams": {"grpo": {"nonsense": 1}}}, "grpo-nonsense"),
    ({"hyperparams": {"nope": {}}}, "hyperparams.nope"),
    ({"hyperparams": []}, "hyperparams"),
    ({"colour": "red"}, "colour"),
    ({"rl_from_sft": True, "methods": ["grpo"]}, "rl_from_sft"),
])
def test_create_experiment_field_errors(api, change, field):
    r = api.post("/api/experiments", {**NEW, **change})
    error = error_of(r, 400)
    assert error["code"] == "validation_error" and field in error["fields"], error
    assert all(isinstance(m, str) for ms in error["fields"].values() for m in ms)
    assert not Experiment.objects.exists()


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\"text\"", b"\xff\xfe"])
def test_create_experiment_bad_json(api, body):
    r = api.client.post("/api/experiments", body, content_type="application/json", **api.headers)
    assert error_of(r, 400)["code"] == "invalid_json"


def test_list_and_read_experiments(api, bob_api, exp, bob, make_experiment):
    make_experiment(bob, name="bob's")
    page = api.get("/api/experiments").json()
    assert page["count"] == 1 and page["results"][0]["id"] == exp.pk and page["next"] is None
    body = api.get(f"/api/experiments/{exp.pk}").json()
    assert body["name"] == exp.name and {r["method"] for r in body["runs"]} == {"sft", "dpo"}
    runs = api.get(f"/api/experiments/{exp.pk}/runs").json()["results"]
    assert len(runs) == 2
    error_of(bob_api.get(f"/api/experiments/{exp.pk}"), 404)
    error_of(bob_api.get(f"/api/experiments/{exp.pk}/runs"), 404)
    assert bob_api.get("/api/experiments").json()["count"] == 1


def test_experiment_list_paginates(api, alice, make_experiment):
    for n in range(3):
        make_experiment(alice, name=f"e{n}")
    page = api.get("/api/experiments", limit=2).json()
    assert page["count"] == 3 and len(page["results"]) == 2 and "offset=2" in page["next"]
    assert len(api.get("/api/experiments", limit=2, offset=2).json()["results"]) == 1
    assert "limit" in error_of(api.get("/api/experiments", limit=0), 400)["fields"]
    assert "offset" in error_of(api.get("/api/experiments", offset="x"), 400)["fields"]


def test_shared_experiment_is_readable_not_cancellable(api, bob, bob_api, exp):
    exp.shared_with.add(bob)
    assert bob_api.get(f"/api/experiments/{exp.pk}").status_code == 200
    error_of(bob_api.post(f"/api/experiments/{exp.pk}/cancel"), 404)
    error_of(bob_api.post(f"/api/runs/{exp.runs.first().pk}/cancel"), 404)
    assert not Run.objects.filter(state=Run.State.CANCELLED).exists()


def test_cancel_experiment(api, bob_api, exp):
    error_of(bob_api.post(f"/api/experiments/{exp.pk}/cancel"), 404)
    r = api.post(f"/api/experiments/{exp.pk}/cancel")
    assert r.status_code == 200 and {run["state"] for run in r.json()["runs"]} == {"cancelled"}


def test_cancel_run(api, bob_api, exp):
    run = exp.runs.get(method="dpo")
    error_of(bob_api.post(f"/api/runs/{run.pk}/cancel"), 404)
    r = api.post(f"/api/runs/{run.pk}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert exp.runs.get(method="sft").state == Run.State.QUEUED


# --- runs -----------------------------------------------------------------------------------------------

def test_read_run(api, bob_api, exp):
    run = exp.runs.get(method="sft")
    body = api.get(f"/api/runs/{run.pk}").json()
    assert body["id"] == run.pk and body["state"] == "queued" and body["config"]["method"] == "sft"
    error_of(bob_api.get(f"/api/runs/{run.pk}"), 404)
    error_of(api.get("/api/runs/999999"), 404)


def test_metrics_filters_and_pages(api, bob_api, exp):
    run = exp.runs.get(method="sft")
    url = f"/api/runs/{run.pk}/metrics"
    everything = api.get(url).json()
    assert everything["count"] == 90 and everything["names"] == ["eval/kl", "eval/reward", "train/loss"]
    body = api.get(url, names="eval/reward", step_min=5, step_max=9).json()
    assert [(p["name"], p["step"]) for p in body["results"]] == [("eval/reward", s) for s in range(5, 10)]
    assert api.get(url, names="eval/reward,train/loss").json()["count"] == 60
    assert api.get(url, names="eval/*").json()["count"] == 60
    first = api.get(url, names="eval/kl", limit=20).json()
    assert len(first["results"]) == 20 and first["next"]
    rest = api.client.get(first["next"], **api.headers).json()
    assert [p["step"] for p in rest["results"]] == list(range(20, 30)) and rest["next"] is None
    fields = error_of(api.get(url, step_min="a", limit=10**9), 400)["fields"]
    assert set(fields) == {"step_min", "limit"}
    error_of(bob_api.get(url), 404)


def test_nan_metric_is_null(api, exp):
    run = exp.runs.get(method="dpo")
    Metric.objects.create(run=run, step=1, name="train/loss", value=None, wall_time=1.0)
    assert api.get(f"/api/runs/{run.pk}/metrics").json()["results"][0]["value"] is None


def test_samples(api, bob_api, exp):
    run = exp.runs.get(method="sft")
    url = f"/api/runs/{run.pk}/samples"
    body = api.get(url).json()
    assert body["count"] == 6 and body["steps"] == [0, 10]
    last = api.get(url, step="last").json()
    assert {s["step"] for s in last["results"]} == {10} and last["results"][0]["prompt"] == "q0"
    assert api.get(url, step=0).json()["count"] == 3
    assert "step" in error_of(api.get(url, step="soon"), 400)["fields"]
    error_of(bob_api.get(url), 404)


# --- ratings ----------------------------------------------------------------------------------------------

@pytest.fixture
def rated(alice):
    return make_demo_experiment(alice, prompts=3, samples=1)


def test_rate_and_vote(api, alice, rated):
    item = api.get(f"/api/experiments/{rated.pk}/rate/next").json()
    assert item["done"] is False and item["token"] and "sft" not in json.dumps(item).lower().split()
    r = api.post(f"/api/experiments/{rated.pk}/votes", {"token": item["token"], "outcome": "a"})
    assert r.status_code == 201, r.content
    assert r.json()["reveal"]["a"]["label"] and Vote.objects.filter(rater=alice).count() == 1
    again = api.post(f"/api/experiments/{rated.pk}/votes", {"token": item["token"], "outcome": "a"})
    assert error_of(again, 409)["code"] == "item_expired"


def test_vote_field_errors(api, rated):
    fields = error_of(api.post(f"/api/experiments/{rated.pk}/votes", {"outcome": "maybe"}), 400)["fields"]
    assert set(fields) == {"outcome", "token"}
    error_of(api.post(f"/api/experiments/{rated.pk}/votes", {"outcome": "a", "token": "forged"}), 409)


def test_vote_other_users_experiment_is_404(bob, bob_api, rated):
    error_of(bob_api.get(f"/api/experiments/{rated.pk}/rate/next"), 404)
    error_of(bob_api.post(f"/api/experiments/{rated.pk}/votes", {"token": "x", "outcome": "a"}), 404)
    error_of(bob_api.get(f"/api/experiments/{rated.pk}/leaderboard"), 404)
    Invitation.objects.create(experiment=rated, rater=bob)
    assert bob_api.get(f"/api/experiments/{rated.pk}/rate/next").json()["done"] is False
    assert bob_api.get(f"/api/experiments/{rated.pk}/leaderboard").status_code == 200
    error_of(bob_api.get(f"/api/experiments/{rated.pk}"), 404)  # a rater sees only the rating


def test_leaderboard(api, alice, rated):
    from webapp.ratings.demo import simulate_votes

    simulate_votes(rated, [alice], 20)
    board = api.get(f"/api/experiments/{rated.pk}/leaderboard").json()
    assert board["experiment"] == rated.pk and board["votes"] > 0 and len(board["rows"]) >= 3
    assert "both_bad" in error_of(api.get(f"/api/experiments/{rated.pk}/leaderboard", both_bad="x"), 400)["fields"]
    assert "step" in error_of(api.get(f"/api/experiments/{rated.pk}/leaderboard", step="x"), 400)["fields"]


# --- reports ---------------------------------------------------------------------------------------------

def test_report_downloads(api, bob_api, rated):
    r = api.get(f"/api/experiments/{rated.pk}/report.json")
    assert r.status_code == 200 and r["Content-Disposition"].startswith("attachment")
    doc = json.loads(r.content)
    assert doc["experiment"]["name"] == rated.name
    assert api.get(f"/api/experiments/{rated.pk}/report.csv").content.startswith(b"experiment,")
    assert api.get(f"/api/experiments/{rated.pk}").json()["report_url"].endswith("/report.json")
    error_of(api.get(f"/api/experiments/{rated.pk}/report.exe"), 404)
    error_of(bob_api.get(f"/api/experiments/{rated.pk}/report.json"), 404)
    error_of(Client().get(f"/api/experiments/{rated.pk}/report.json"), 401)


def test_nul_in_query_is_400(api, exp):
    run = exp.runs.first()
    assert "names" in error_of(api.get(f"/api/runs/{run.pk}/metrics", names="eval/\x00"), 400)["fields"]


def test_create_experiment_nul_in_strings(api):
    error = error_of(api.post("/api/experiments", {**NEW, "name": "a\x00b", "hyperparams": {"grpo": {"loss_type": "\x00"}}}), 400)
    assert "name" in error["fields"]


def test_list_query_count_does_not_grow(api, alice, make_experiment, django_assert_max_num_queries):
    make_experiment(alice, name="one")
    with CaptureQueriesContext(connection) as one:
        api.get("/api/experiments")
    for n in range(4):
        make_experiment(alice, name=f"more {n}", methods=["sft", "dpo"])
    with django_assert_max_num_queries(len(one)):
        assert api.get("/api/experiments").json()["count"] == 5


def test_experiment_detail_query_count_does_not_grow(api, alice, make_experiment):
    small = make_experiment(alice, methods=["sft"])
    big = make_experiment(alice, methods=["sft", "dpo", "grpo", "rloo"], seeds=3)
    with CaptureQueriesContext(connection) as q_small:
        api.get(f"/api/experiments/{small.pk}")
    with CaptureQueriesContext(connection) as q_big:
        assert len(api.get(f"/api/experiments/{big.pk}").json()["runs"]) == 12
    assert len(q_big) == len(q_small)


@pytest.mark.parametrize("path", ["/api/runs/99999999999999999999", "/api/experiments/99999999999999999999/runs",
                                  "/api/experiments/1e3", "/api/runs/-1/metrics"])
def test_out_of_range_ids_are_404(api, path):
    error_of(api.get(path), 404)
