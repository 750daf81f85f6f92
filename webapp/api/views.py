"""The REST API. Thin, like the pages: access checks here (the same querysets, 404 for what one may not
see), validation in the experiments form, writes in the apps' `do_*` actions, numbers from
webapp.ratings. Shapes are documented in schema.py (served at /api/openapi.json)."""

from __future__ import annotations

import json
import math

from django.apps import apps
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from webapp.api.auth import api_view, json_body, ok
from webapp.api.errors import ApiError, error_response, not_found
from webapp.api.schema import schema
from webapp.api.serializers import experiment_data, run_data, sample_data
from webapp.experiments.access import experiment_for_user, experiments_for_user, run_for_user
from webapp.experiments.actions import NotResumable, do_cancel_experiment, do_cancel_run, do_resume_run
from webapp.experiments.forms import SIGNAL_KEYS, ExperimentForm, limit_refusal, signal_values
from webapp.experiments.methods import METHODS
from webapp.experiments.models import Experiment, Metric, Run
from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena, redeem_token
from webapp.ratings.leaderboard import BOTH_BAD_CHOICES, as_json, build_leaderboard
from webapp.ratings.models import Vote, leaderboard_experiments, raterable_experiments

DEFAULT_LIMIT = 100
MAX_LIMIT = {"metrics": 10_000, "samples": 1000, "experiments": 1000}
MAX_INT = 2**31 - 1
# What a new experiment gets for a field the request leaves out (the model's defaults).
CREATE_DEFAULTS = {name: Experiment._meta.get_field(name).default
                   for name in Experiment.SETTINGS if name not in ("name", "task", "methods", "hyperparams")}


# --- helpers -------------------------------------------------------------------------------------------

def _int_param(request: HttpRequest, name: str, default: int | None = None, lo: int = 0, hi: int = MAX_INT,
               errors: dict | None = None) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        if errors is not None:
            errors[name] = [f"An integer from {lo} to {hi}."]
        return default
    return value


def _page(request: HttpRequest, queryset, kind: str, errors: dict) -> tuple[list, dict]:
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT[kind], errors)
    offset = _int_param(request, "offset", 0, 0, MAX_INT, errors)
    if errors:
        raise ApiError(400, "Invalid query parameters.", fields=errors)
    count = queryset.count()
    items = list(queryset[offset:offset + limit])
    nxt = None
    if offset + limit < count:
        query = request.GET.copy()
        query["offset"], query["limit"] = str(offset + limit), str(limit)
        nxt = f"{request.path}?{query.urlencode()}"
    return items, {"count": count, "offset": offset, "limit": limit, "next": nxt}


def _experiment(request: HttpRequest, pk: int, owner: bool = False) -> Experiment:
    """Visible to the user (owned or shared); owner-only for changes (webapp.experiments.access). Anything
    else: the API's 404."""
    try:
        return experiment_for_user(request.user, pk, write=owner)
    except Http404:
        raise not_found("experiment") from None


def _run(request: HttpRequest, pk: int, owner: bool = False) -> Run:
    try:
        return run_for_user(request.user, pk, write=owner)
    except Http404:
        raise not_found("run") from None


def _finite(x):
    return x if isinstance(x, int | float) and math.isfinite(x) else None


# --- index, schema, docs -------------------------------------------------------------------------------

@api_view(auth=False)
def index(request: HttpRequest) -> JsonResponse:
    return ok({"schema": reverse("api:schema"), "docs": reverse("api:docs"),
               "experiments": reverse("api:experiments"), "tokens": reverse("api:tokens")})


@api_view(auth=False)
def openapi(request: HttpRequest) -> JsonResponse:
    return ok(schema())


@require_GET
def docs(request: HttpRequest) -> HttpResponse:
    """The schema's operations as a plain HTML page (no CDN, no JavaScript)."""
    spec = schema()
    operations = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            params = [*item.get("parameters", []), *op.get("parameters", [])]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            operations.append({"method": method.upper(), "path": path, "op": op, "params": params,
                               "body": _schema_fields(spec, body) if body else None,
                               "responses": sorted(op.get("responses", {}).items())})
    return render(request, "api/docs.html", {"spec": spec, "operations": operations})


def _schema_fields(spec: dict, body: dict) -> list[dict]:
    if "$ref" in body:
        body = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    required = set(body.get("required", []))
    return [{"name": k, "type": v.get("type", "object"), "required": k in required,
             "description": v.get("description", "")} for k, v in body.get("properties", {}).items()]


@csrf_exempt
def not_found_view(request: HttpRequest, rest: str = "") -> JsonResponse:
    return error_response(404, "No such API endpoint.")


# --- experiments ---------------------------------------------------------------------------------------

@api_view(methods=("GET", "POST"))
def experiments(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _create_experiment(request)
    errors: dict = {}
    qs = experiments_for_user(request.user).with_run_counts().select_related("owner")
    items, page = _page(request, qs, "experiments", errors)
    return ok({**page, "results": [experiment_data(e) for e in items]})


def _form_data(payload: dict) -> tuple[dict, dict]:
    """Form data from the JSON body: top-level experiment fields, and per-method settings either nested
    (`"hyperparams": {"grpo": {"beta": 0.1}}`) or flat (`"grpo-beta": 0.1`). Unknown keys are errors."""
    data = dict(CREATE_DEFAULTS)
    unknown: dict = {}
    probe = ExperimentForm(user=None)
    hyper = payload.get("hyperparams", {})
    if not isinstance(hyper, dict):
        unknown["hyperparams"] = ["An object: {method: {setting: value}}."]
        hyper = {}
    flat = {k: v for k, v in payload.items() if k != "hyperparams"}
    for method, params in hyper.items():
        if method not in METHODS or not isinstance(params, dict):
            unknown[f"hyperparams.{method}"] = [f"A method ({', '.join(METHODS)}) with an object of settings."]
            continue
        for key, value in params.items():
            flat[f"{method}-{key}"] = value
    _signal_data(probe, flat, data, unknown)
    for key, value in flat.items():
        if key not in probe.fields or key in ("dataset", "dataset_from"):
            unknown[key] = ["Unknown field."]
            continue
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            unknown[key] = [f"At most {MAX_INT}."]
            continue
        if key == "methods":
            if not isinstance(value, list | str) or isinstance(value, list) and not all(
                    isinstance(v, str) for v in value):
                unknown[key] = ["A list of method names."]
                continue
        elif isinstance(value, dict | list) and key.split("-", 1)[-1] not in SIGNAL_KEYS:
            unknown[key] = ["A single value (a string, number or true/false), not an object or a list."]
            continue
        data[key] = value
    for name, field in probe.fields.items():  # per-method settings left out: their defaults
        if "-" in name and name not in data and field.initial is not None:
            data[name] = field.initial
    for key in ("methods",):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    return data, unknown


def _signal_data(probe: ExperimentForm, flat: dict, data: dict, unknown: dict) -> None:
    """Signal specs (`gold_reward` and `monitors` at the top, `reward` per method) as the form's picker fields.
    A method's own `gold_reward` or `monitors` is the experiment's: every method has the same ones."""
    given: dict = {}
    for key in list(flat):
        method, _, name = key.rpartition("-")
        if name not in SIGNAL_KEYS or method not in ("", *METHODS):
            continue
        value = flat.pop(key)
        target = key if name == "reward" else name
        if target in given and given[target] != value:
            unknown[key] = [f"Every method of an experiment has the same {name}: give it once, at the top level."]
            continue
        given[target] = value
    for target, value in given.items():
        values, errors = signal_values(probe, target, value)
        if errors:
            unknown[target] = errors
        else:
            data.update(values)


class _Data(dict):
    """Form data from JSON: lists stay lists (MultipleChoiceField), scalars become text like a POST."""

    def getlist(self, key, default=None):
        value = self.get(key, default)
        return value if isinstance(value, list) else [value]


def _as_form_value(value, key: str = ""):
    if key.split("-", 1)[-1] in SIGNAL_KEYS and isinstance(value, dict | list):
        return json.dumps(value)  # signal specs: the form's text fields take JSON, which training.config parses
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, list):
        return [v if isinstance(v, str) else str(v) for v in value]
    return str(value)


def _create_experiment(request: HttpRequest) -> JsonResponse:
    payload = json_body(request)
    data, unknown = _form_data(payload)
    form = ExperimentForm(_Data({k: _as_form_value(v, k) for k, v in data.items()}), {}, user=request.user)
    valid = form.is_valid()
    if unknown or not valid:
        fields = {**{k: list(v) for k, v in form.errors.items()}, **unknown}
        if not unknown and limit_refusal(form):
            raise ApiError(429, " ".join(form.non_field_errors()), "limit_exceeded", fields)
        raise ApiError(400, "The experiment is not valid.", "validation_error", fields)
    experiment = form.save(owner=request.user)
    experiment = Experiment.objects.select_related("owner").with_run_counts().get(pk=experiment.pk)
    return ok(experiment_data(experiment, runs=list(experiment.runs.all())), status=201)


@api_view()
def experiment(request: HttpRequest, pk: int) -> JsonResponse:
    exp = _experiment(request, pk)
    exp = Experiment.objects.with_run_counts().select_related("owner").get(pk=exp.pk)
    return ok(experiment_data(exp, runs=list(exp.runs.all())))


@api_view(methods=("POST",))
def experiment_cancel(request: HttpRequest, pk: int) -> JsonResponse:
    exp = _experiment(request, pk, owner=True)
    do_cancel_experiment(exp, by=request.user.get_username())
    exp = Experiment.objects.with_run_counts().select_related("owner").get(pk=exp.pk)
    return ok(experiment_data(exp, runs=list(exp.runs.all())))


@api_view()
def experiment_runs(request: HttpRequest, pk: int) -> JsonResponse:
    exp = _experiment(request, pk)
    return ok({"results": [run_data(r) for r in exp.runs.all()]})


# --- runs ----------------------------------------------------------------------------------------------

@api_view()
def run(request: HttpRequest, pk: int) -> JsonResponse:
    return ok(run_data(_run(request, pk)))


@api_view(methods=("POST",))
def run_cancel(request: HttpRequest, pk: int) -> JsonResponse:
    r = _run(request, pk, owner=True)
    do_cancel_run(r, by=request.user.get_username())
    r.refresh_from_db()
    return ok(run_data(r))


@api_view(methods=("POST",))
def run_resume(request: HttpRequest, pk: int) -> JsonResponse:
    r = _run(request, pk, owner=True)
    try:
        r = do_resume_run(r, by=request.user.get_username())
    except NotResumable as exc:
        raise ApiError(409, str(exc), "not_resumable") from exc
    return ok(run_data(r))


def _names(request: HttpRequest) -> list[str]:
    names = []
    for raw in request.GET.getlist("names") + request.GET.getlist("name"):
        names += [n.strip() for n in raw.split(",") if n.strip()]
    return names


@api_view()
def run_metrics(request: HttpRequest, pk: int) -> JsonResponse:
    """Long format, ordered by (name, step). `names`: comma-separated or repeated; a name ending in '/*'
    matches a prefix (`eval/*`). `step_min`, `step_max`: inclusive."""
    r = _run(request, pk)
    errors: dict = {}
    step_min = _int_param(request, "step_min", None, 0, MAX_INT, errors)
    step_max = _int_param(request, "step_max", None, 0, MAX_INT, errors)
    qs = Metric.objects.filter(run=r)
    names = _names(request)
    if names:
        where = Q()
        for n in names:
            where |= Q(name__startswith=n[:-1]) if n.endswith("/*") else Q(name=n)
        qs = qs.filter(where)
    if step_min is not None:
        qs = qs.filter(step__gte=step_min)
    if step_max is not None:
        qs = qs.filter(step__lte=step_max)
    qs = qs.order_by("name", "step", "id").values_list("name", "step", "value", "wall_time")
    items, page = _page(request, qs, "metrics", errors)
    all_names = sorted(set(Metric.objects.filter(run=r).values_list("name", flat=True).distinct().order_by()))
    return ok({**page, "run": r.pk, "names": all_names, "results": [
        {"name": n, "step": s, "value": _finite(v), "wall_time": _finite(w)} for n, s, v, w in items]})


@api_view()
def run_samples(request: HttpRequest, pk: int) -> JsonResponse:
    """Samples of the run, ordered by (step, prompt, index); `step` picks one evaluation
    (`last`: the latest one with samples)."""
    r = _run(request, pk)
    errors: dict = {}
    qs = r.samples.all()
    raw = request.GET.get("step")
    if raw == "last":
        last = r.samples.order_by("-step").values_list("step", flat=True).first()
        qs = qs.filter(step=last if last is not None else -1)
    elif raw not in (None, ""):
        step = _int_param(request, "step", None, 0, MAX_INT, errors)
        if step is not None:
            qs = qs.filter(step=step)
        else:
            errors["step"] = ["An integer, or 'last'."]
    steps = sorted(set(r.samples.values_list("step", flat=True).distinct().order_by()))
    items, page = _page(request, qs.order_by("step", "prompt_id", "index"), "samples", errors)
    results = [{**sample_data(s), "reward": _finite(s.reward)} for s in items]
    return ok({**page, "run": r.pk, "steps": steps, "results": results})


# --- ratings -------------------------------------------------------------------------------------------

def _rating_experiment(request: HttpRequest, pk: int) -> Experiment:
    found = raterable_experiments(request.user).select_related("owner").filter(pk=pk).first()
    if found is None:
        raise not_found("experiment")
    return found


@api_view()
def rate_next(request: HttpRequest, pk: int) -> JsonResponse:
    """The next item to rate, blind: two texts (a, b) and an opaque token to vote with."""
    exp = _rating_experiment(request, pk)
    return ok(Arena(exp).next_payload(request.user, request.session))


@api_view(methods=("POST",))
def votes(request: HttpRequest, pk: int) -> JsonResponse:
    exp = _rating_experiment(request, pk)
    payload = json_body(request)
    outcome, token = payload.get("outcome"), payload.get("token")
    fields = {}
    if not isinstance(outcome, str) or outcome not in Vote.Outcome.values:
        fields["outcome"] = [f"One of: {', '.join(Vote.Outcome.values)}."]
    if not isinstance(token, str) or not token:
        fields["token"] = ["The token of an item from GET .../rate/next."]
    if fields:
        raise ApiError(400, "The vote is not valid.", "validation_error", fields)
    item = redeem_token(request.session, exp.pk, token)
    arena = Arena(exp, step=item.step) if item else None
    texts = arena.texts(item) if arena else None
    if texts is None:
        raise ApiError(409, "This item has expired or was already rated; get another one.", "item_expired")
    _vote, created = do_cast_vote(exp, request.user, item, outcome)
    reveal = arena.reveal(item, {**texts, "reward_a": _finite(texts["reward_a"]),
                                 "reward_b": _finite(texts["reward_b"])})
    return ok({"outcome": outcome, "created": created, "reveal": reveal,
               "progress": arena.progress(request.user)}, status=201)


@api_view()
def leaderboard(request: HttpRequest, pk: int) -> JsonResponse:
    exp = leaderboard_experiments(request.user).select_related("owner").filter(pk=pk).first()
    if exp is None:
        raise not_found("experiment")
    errors: dict = {}
    step = _int_param(request, "step", None, 0, MAX_INT, errors)
    both_bad = request.GET.get("both_bad", "tie")
    if both_bad not in BOTH_BAD_CHOICES:
        errors["both_bad"] = [f"One of: {', '.join(BOTH_BAD_CHOICES)}."]
    if errors:
        raise ApiError(400, "Invalid query parameters.", fields=errors)
    return ok(as_json(build_leaderboard(exp, step=step, both_bad=both_bad)))


# --- reports (when the reports app is installed) ---------------------------------------------------------

API_REPORT_FORMATS = ("json", "csv", "votes.csv", "md")  # fast ones; HTML and PDF: the pages' downloads


@api_view()
def experiment_report(request: HttpRequest, pk: int, fmt: str = "json") -> HttpResponse:
    """The experiment's report (webapp.reports) as a download: JSON, metrics CSV, votes CSV or Markdown."""
    if not apps.is_installed("webapp.reports") or fmt not in API_REPORT_FORMATS:
        raise not_found("report format")
    exp = _experiment(request, pk)
    from webapp.reports.formats import render
    from webapp.reports.report import build_report

    body, content_type, filename = render(build_report(exp, votes=fmt != "csv"), fmt)
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
