"""The OpenAPI 3.0 document of the API, written by hand next to the views it describes (served at
/api/openapi.json; tests fuzz the API against it with schemathesis)."""

from __future__ import annotations

from functools import cache

from django.apps import apps

from webapp.experiments.methods import METHODS
from webapp.experiments.models import Run
from webapp.ratings.leaderboard import BOTH_BAD_CHOICES
from webapp.ratings.models import Vote


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _resp(description: str, schema: dict | None = None) -> dict:
    return {"description": description, **(_json(schema) if schema else {})}


ERR = _ref("Error")
COMMON_ERRORS = {"401": _resp("No valid token (or session)", ERR), "404": _resp("Not found, or not yours", ERR),
                 "405": _resp("Method not allowed", ERR),
                 "503": _resp("The database or the broker is unreachable: retry after `Retry-After` seconds", ERR)}
def page_params(kind: str) -> list[dict]:
    """limit (1 to the endpoint's maximum, views.MAX_LIMIT) and offset."""
    from webapp.api.views import MAX_INT, MAX_LIMIT

    return [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT[kind]},
             "description": f"Page size (at most {MAX_LIMIT[kind]})."},
            {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT}}]
NUM = {"type": "number", "nullable": True}
INT = {"type": "integer"}
STR = {"type": "string"}
NSTR = {"type": "string", "nullable": True}


def _page_of(item: dict, **extra) -> dict:
    return {"type": "object", "required": ["count", "offset", "limit", "next", "results"], "properties": {
        "count": INT, "offset": INT, "limit": INT, "next": NSTR, "results": {"type": "array", "items": item},
        **extra}}


def _id_param(name: str = "id") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _op(op_id: str, summary: str, ok: dict, *, params=(), body=None, errors=(), tag: str = "experiments") -> dict:
    responses = dict(ok)
    responses.update({k: v for k, v in COMMON_ERRORS.items()})
    for code in errors:
        responses[code] = _resp({"400": "Invalid input (field errors in error.fields)", "403": "CSRF check failed",
                                 "409": "Conflict", "413": "The body is larger than the limit",
                                 "429": "A quota is reached (the message names it and its value)"}[code], ERR)
    op = {"operationId": op_id, "summary": summary, "tags": [tag], "parameters": list(params),
          "responses": responses, "security": [{"token": []}, {"session": []}]}
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    return op


@cache
def schema() -> dict:
    run_states = list(Run.State.values)
    experiment_props = {
        "id": INT, "name": STR, "owner": STR, "base_model": STR, "task": STR,
        "methods": {"type": "array", "items": STR}, "seeds": INT, "max_steps": INT, "eval_every": INT,
        "eval_prompts": INT, "eval_samples": INT, "max_new_tokens": INT, "hyperparams": {"type": "object"},
        "rl_from_sft": {"type": "boolean"}, "queue": STR, "created": STR,
        "saved_dataset": {"type": "integer", "nullable": True, "description": "The dataset (datasets app) it trains on."},
        "state": {"type": "string", "enum": ["running", "queued", "failed", "cancelled", "finished", "empty"]},
        "url": STR, "api_url": STR, "runs": {"type": "array", "items": _ref("Run")},
        "report_url": {"type": "string", "description": "The JSON report (when the reports app is installed)."},
        "downloads": {"type": "object", "additionalProperties": STR,
                      "description": "The report's export pages by format (when installed)."},
    }
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": STR, "message": STR,
                "fields": {"type": "object", "additionalProperties": {"type": "array", "items": STR},
                           "description": "Field name -> messages (validation errors only)."}}}}},
        "Run": {"type": "object", "required": ["id", "experiment", "method", "seed", "state", "step", "total"],
                "properties": {
                    "id": INT, "experiment": INT, "method": STR, "seed": INT, "label": STR,
                    "state": {"type": "string", "enum": run_states}, "active": {"type": "boolean"},
                    "step": INT, "total": INT, "percent": INT, "eta_s": NUM, "phase": STR, "attempts": INT,
                    "stop_requested": {"type": "boolean"}, "depends_on": {"type": "integer", "nullable": True},
                    "latest": {"type": "object", "properties": {
                        "reward": NUM, "kl": NUM, "step": {"type": "integer", "nullable": True}}},
                    "error": STR, "log": {"type": "array", "items": STR}, "config": {"type": "object"},
                    "created": STR, "started_at": NSTR, "finished_at": NSTR, "url": STR, "api_url": STR}},
        "Experiment": {"type": "object", "required": ["id", "name", "methods", "state"],
                       "properties": experiment_props},
        "NewExperiment": {
            "type": "object", "required": ["name", "task", "methods"],
            "description": "The fields of the new-experiment form; validated by the same form. Per-method "
                           "settings go in `hyperparams` ({method: {setting: value}}) or flat as "
                           "`<method>-<setting>`. Left out: the defaults.",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "A name for the experiment."},
                "base_model": {"type": "string", "description": "tiny, demo, a hub id (org/name), run:<id> (a finished "
                                                                "run's final model) or a folder under a data root."},
                "task": {"type": "string", "description": "A built-in task (arithmetic, sentiment, ...)."},
                "methods": {"type": "array", "items": {"type": "string", "enum": list(METHODS)}, "minItems": 1,
                            "maxItems": len(METHODS), "uniqueItems": True,
                            "description": "One run per method and seed."},
                "seeds": {"type": "integer", "description": "Runs per method (1 to 5)."},
                "max_steps": {"type": "integer", "description": "Training steps."},
                "eval_every": {"type": "integer", "description": "Evaluate every N steps."},
                "eval_prompts": {"type": "integer", "description": "Held-out eval prompts."},
                "eval_samples": {"type": "integer", "description": "Completions per eval prompt."},
                "max_new_tokens": {"type": "integer", "description": "Generation length."},
                "rl_from_sft": {"type": "boolean", "description": "Other methods start from the SFT model."},
                "queue": {"type": "string", "description": "The Celery queue of the workers."},
                "saved_dataset": {"type": "integer", "description": "A dataset's id (datasets app): replaces the task."},
                "gold_reward": {"oneOf": [{"type": "string"}, {"type": "object"}],
                                "description": "The experiment's gold signal (eval/reward of every run): a kind, or "
                                               "{\"kind\": ..., parameters}; left out: the task's own. GET "
                                               "/signals/ or `python -m training rewards` lists them."},
                "monitors": {"type": "array", "maxItems": 3, "items": {"oneOf": [{"type": "string"}, {"type": "object"}]},
                             "description": "More signals logged at every evaluation as eval/reward/<name>."},
                "hyperparams": {"type": "object", "additionalProperties": {"type": "object"},
                                "description": "Per-method settings, e.g. {\"grpo\": {\"beta\": 0.1}}; the "
                                               "training signal of PPO, GRPO and RLOO as {\"grpo\": {\"reward\": "
                                               "{\"kind\": \"numeric_match\", \"tolerance\": 0.01}}}; a reward "
                                               "model as {\"kind\": \"reward_model\", \"path\": \"run:<id>\"}."},
            }},
        "Metrics": _page_of({"type": "object", "required": ["name", "step", "value"], "properties": {
            "name": STR, "step": INT, "value": NUM, "wall_time": NUM}},
            run=INT, names={"type": "array", "items": STR}),
        "Samples": _page_of({"type": "object", "properties": {
            "step": INT, "prompt_id": INT, "index": INT, "prompt": STR, "completion": STR, "reward": NUM}},
            run=INT, steps={"type": "array", "items": INT}),
        "RateItem": {"type": "object", "required": ["done"], "properties": {
            "done": {"type": "boolean"}, "reason": STR, "token": STR, "prompt": STR, "a": STR, "b": STR,
            "progress": {"type": "object"}}},
        "NewVote": {"type": "object", "required": ["token", "outcome"], "properties": {
            "token": {"type": "string", "description": "From GET /api/experiments/{id}/rate/next."},
            "outcome": {"type": "string", "enum": list(Vote.Outcome.values),
                        "description": "a: the left text is better; b: the right one; tie; both_bad."}}},
        "VoteResult": {"type": "object", "required": ["outcome", "reveal"], "properties": {
            "outcome": STR, "created": {"type": "boolean"},
            "reveal": {"type": "object", "nullable": True, "description": "null while the owner holds reveals back"},
            "progress": {"type": "object"}}},
        "Leaderboard": {"type": "object", "required": ["experiment", "rows"], "properties": {
            "experiment": INT, "step": {"type": "integer", "nullable": True}, "both_bad": STR, "votes": INT,
            "rows": {"type": "array", "items": {"type": "object", "properties": {
                "contestant": STR, "label": STR, "method": STR, "votes": INT,
                "rank": {"type": "integer", "nullable": True}, "bt_score": NUM, "bt_low": NUM, "bt_high": NUM,
                "elo": NUM, "win_rate": NUM, "reward": NUM}}}}},
    }
    exp_id = _id_param()
    paths = {
        "/api/experiments": {
            "get": _op("listExperiments", "Experiments you own or that are shared with you, newest first",
                       {"200": _resp("A page of experiments", _page_of(_ref("Experiment")))},
                       params=page_params("experiments"), errors=("400",)),
            "post": _op("createExperiment", "Create an experiment and queue its runs",
                        {"201": _resp("Created, with its runs", _ref("Experiment"))},
                        body=_ref("NewExperiment"), errors=("400", "403", "413", "429")),
        },
        "/api/experiments/{id}": {"get": _op("getExperiment", "An experiment with its runs",
                                             {"200": _resp("The experiment", _ref("Experiment"))},
                                             params=[exp_id])},
        "/api/experiments/{id}/runs": {"get": _op(
            "listRuns", "The runs of an experiment",
            {"200": _resp("Its runs", {"type": "object", "required": ["results"], "properties": {
                "results": {"type": "array", "items": _ref("Run")}}})}, params=[exp_id], tag="runs")},
        "/api/experiments/{id}/cancel": {"post": _op(
            "cancelExperiment", "Cancel every active run (owner only)",
            {"200": _resp("The experiment", _ref("Experiment"))}, params=[exp_id], errors=("403",))},
        "/api/runs/{id}": {"get": _op("getRun", "A run: state, progress, latest evaluation, config",
                                      {"200": _resp("The run", _ref("Run"))}, params=[exp_id], tag="runs")},
        "/api/runs/{id}/cancel": {"post": _op(
            "cancelRun", "Cancel a run (owner only): queued runs at once, running ones after their step",
            {"200": _resp("The run", _ref("Run"))}, params=[exp_id], errors=("403",), tag="runs")},
        "/api/runs/{id}/resume": {"post": _op(
            "resumeRun", "Resume a failed or cancelled run from its last checkpoint (owner only), keeping its metrics",
            {"200": _resp("The run", _ref("Run"))}, params=[exp_id], errors=("403", "409"), tag="runs")},
        "/api/runs/{id}/metrics": {"get": _op(
            "getRunMetrics", "Metric points, long format, ordered by (name, step)",
            {"200": _resp("A page of points", _ref("Metrics"))}, tag="runs", errors=("400",), params=[
                exp_id,
                {"name": "names", "in": "query", "schema": STR,
                 "description": "Comma-separated metric names; `eval/*` matches a prefix."},
                {"name": "step_min", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "step_max", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                *page_params("metrics")])},
        "/api/runs/{id}/samples": {"get": _op(
            "getRunSamples", "Eval completions with their gold rewards",
            {"200": _resp("A page of samples", _ref("Samples"))}, tag="runs", errors=("400",), params=[
                exp_id, {"name": "step", "in": "query", "schema": STR,
                         "description": "An evaluation step, or `last`."}, *page_params("samples")])},
        "/api/experiments/{id}/rate/next": {"get": _op(
            "nextRatingItem", "The next blind pair to rate (owner or invited rater)",
            {"200": _resp("An item, or done", _ref("RateItem"))}, params=[exp_id], tag="ratings")},
        "/api/experiments/{id}/votes": {"post": _op(
            "castVote", "Vote on an item", {"201": _resp("Recorded; who wrote which side", _ref("VoteResult"))},
            params=[exp_id], body=_ref("NewVote"), errors=("400", "403", "409"), tag="ratings")},
        "/api/experiments/{id}/leaderboard": {"get": _op(
            "getLeaderboard", "Bradley-Terry leaderboard of the human votes",
            {"200": _resp("The leaderboard", _ref("Leaderboard"))}, tag="ratings", errors=("400",), params=[
                exp_id, {"name": "step", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "both_bad", "in": "query", "schema": {"type": "string", "enum": list(BOTH_BAD_CHOICES)}}])},
    }
    if apps.is_installed("webapp.reports"):
        fmt = {"name": "fmt", "in": "path", "required": True,
               "schema": {"type": "string", "enum": ["json", "csv", "votes.csv", "md"]},
               "description": "json (the report document), csv (metrics), votes.csv, md."}
        paths["/api/experiments/{id}/report.{fmt}"] = {"get": _op(
            "getReport", "The experiment's report as a download (HTML and PDF: see `downloads`)",
            {"200": {"description": "The report", "content": {
                "application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": STR},
                "text/markdown": {"schema": STR}}}}, params=[exp_id, fmt], tag="reports")}
    return {
        "openapi": "3.0.3",
        "info": {"title": "ptlab API", "version": "1",
                 "description": "Script ptlab experiments. Authenticate with `Authorization: Bearer <token>` "
                                "(create tokens under your account: /api/tokens/). Errors: "
                                "`{\"error\": {\"code\", \"message\", \"fields\"}}`."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "token": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"}}},
    }
