"""The REST API, on django-ninja. Thin, like the pages: access checks here (the same querysets, 404 for
what one may not see), validation in the experiments form, writes in the apps' `do_*` actions, numbers from
webapp.ratings. Each endpoint declares its input and output types (schemas.py); requests are validated
with them and /api/openapi.json is generated from them. Errors keep one shape (errors.py)."""

from __future__ import annotations

import json
import math
from typing import Literal

from django.apps import apps
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from ninja import NinjaAPI, Path, Query, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser

from training import safejson
from webapp.api import schemas
from webapp.api.auth import authenticate, token_session
from webapp.api.errors import ApiError, error_response, not_found
from webapp.api.serializers import experiment_data, run_data, sample_data
from webapp.experiments.access import experiment_for_user, experiments_for_user, run_for_user
from webapp.experiments.actions import NotResumable, do_cancel_experiment, do_cancel_run, do_resume_run
from webapp.experiments.forms import SIGNAL_KEYS, ExperimentForm, limit_refusal, signal_values
from webapp.experiments.methods import METHODS
from webapp.experiments.models import Experiment, Metric, Run
from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.leaderboard import BOTH_BAD_CHOICES, as_json, build_leaderboard
from webapp.ratings.models import leaderboard_experiments, raterable_experiments
from webapp.ratings.tokens import redeem_token

DEFAULT_LIMIT = 100
MAX_LIMIT = {"metrics": 10_000, "samples": 1000, "experiments": 1000}
MAX_INT = 2**31 - 1
# What a new experiment gets for a field the request leaves out (the model's defaults).
CREATE_DEFAULTS = {name: Experiment._meta.get_field(name).default
                   for name in Experiment.SETTINGS if name not in ("name", "task", "methods", "hyperparams")}
DESCRIPTION = ("Script ptlab experiments. Authenticate with `Authorization: Bearer <token>` (create tokens under "
               "your account: /accounts/tokens/). Errors: `{\"error\": {\"code\", \"message\", \"fields\"}}`.")


class SafeParser(Parser):
    """Request bodies with the bounds of training.safejson (depth, number sizes); NUL characters and
    surrogates are left to the form, which reports them by field."""

    def parse_body(self, request: HttpRequest):
        return safejson.loads(request.body.decode("utf-8"), max_depth=settings.PTLAB_MAX_JSON_DEPTH,
                              text_checks=False)


def api_auth(request: HttpRequest):
    """A token (Bearer) or the browser's session (with CSRF for writes); ApiError 401/403 otherwise."""
    bad = sorted({k for k, vs in request.GET.lists() for v in [k, *vs] if "\x00" in v})
    if bad:
        raise ApiError(400, "Query parameters cannot contain NUL characters.",
                       fields={k: ["Contains a NUL character."] for k in bad})
    request.api_token_row = authenticate(request)
    return request.user


api = NinjaAPI(title="ptlab API", version="1", description=DESCRIPTION, auth=api_auth, parser=SafeParser(),
               urls_namespace="api", docs_url=None, openapi_url=None)
ERRORS = {401: schemas.Error, 404: schemas.Error, 405: schemas.Error, 503: schemas.Error}  # 503: handler500
BAD = {400: schemas.Error, **ERRORS}


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return error_response(exc.status, exc.message, exc.code, exc.fields)


@api.exception_handler(NinjaValidationError)
def _validation_error(request, exc: NinjaValidationError):
    fields: dict[str, list[str]] = {}
    whole_body = False
    for err in exc.errors:
        loc = [str(x) for x in err.get("loc", ())]
        if loc[:1] == ["body"] and len(loc) <= 2:
            whole_body = True
        name = (loc[2] if len(loc) > 2 else "body") if loc[:1] == ["body"] else (loc[1] if len(loc) > 1 else "query")
        fields.setdefault(name, []).append(str(err.get("msg", "Invalid value.")))
    if whole_body:
        return error_response(400, "The body must be a JSON object.", "invalid_json")
    body = any(str(err.get("loc", ("",))[0]) == "body" for err in exc.errors)
    if body:
        return error_response(400, "The request is not valid.", "validation_error", fields)
    return error_response(400, "Invalid query parameters.", "invalid", fields)


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    cause = exc.__cause__
    if exc.status_code == 400 and cause is not None:
        return error_response(400, f"The body is not valid JSON: {cause}", "invalid_json")
    return error_response(exc.status_code, str(exc))


@api.exception_handler(RequestDataTooBig)
def _too_big(request, exc):
    most = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(413, f"The body is larger than {most} bytes (PTLAB_MAX_BODY_BYTES).", "body_too_large")


@api.exception_handler(TooManyFieldsSent)
def _too_many(request, exc):
    return error_response(413, f"More than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields.", "body_too_large")


# --- helpers -------------------------------------------------------------------------------------------

def _page(request: HttpRequest, queryset, limit: int, offset: int) -> tuple[list, dict]:
    count = queryset.count()
    items = list(queryset[offset:offset + limit])
    nxt = None
    if offset + limit < count:
        query = request.GET.copy()
        query["offset"], query["limit"] = str(offset + limit), str(limit)
        nxt = f"{request.path}?{query.urlencode()}"
    return items, {"count": count, "offset": offset, "limit": limit, "next": nxt}


def _limit(kind: str):
    return Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT[kind], description=f"Page size (at most {MAX_LIMIT[kind]}).")


OFFSET = Query(0, ge=0, le=MAX_INT)
ID = Path(..., alias="id", description="The id (an unknown one, or one not yours: 404).")


def _experiment(request: HttpRequest, pk: int, owner: bool = False) -> Experiment:
    """Visible to the user (owned or shared); owner-only for changes (webapp.experiments.access). Anything
    else: the API's 404."""
    if not 1 <= pk <= MAX_INT:
        raise not_found("experiment")
    try:
        return experiment_for_user(request.user, pk, write=owner)
    except Http404:
        raise not_found("experiment") from None


def _run(request: HttpRequest, pk: int, owner: bool = False) -> Run:
    if not 1 <= pk <= MAX_INT:
        raise not_found("run")
    try:
        return run_for_user(request.user, pk, write=owner)
    except Http404:
        raise not_found("run") from None


def _finite(x):
    return x if isinstance(x, int | float) and math.isfinite(x) else None


# --- index, schema, docs -------------------------------------------------------------------------------

@api.get("/", auth=None, response=schemas.Index, url_name="index", operation_id="index", by_alias=True,
         summary="Links to the schema, the docs and the collections", tags=["index"])
def index(request: HttpRequest):
    return {"schema": reverse("api:schema"), "docs": reverse("api:docs"),
            "experiments": reverse("api:experiments"), "tokens": reverse("api:tokens")}


def schema() -> dict:
    """The OpenAPI document, generated by django-ninja from the endpoints' declared types."""
    spec = api.get_openapi_schema(path_prefix="/api")
    spec["components"].setdefault("securitySchemes", {}).update({
        "token": {"type": "http", "scheme": "bearer"},
        "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"}})
    for item in spec["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and op.get("security"):
                op["security"] = [{"token": []}, {"session": []}]
            if isinstance(op, dict) and "responses" in op:
                op["responses"] = {str(code): r for code, r in op["responses"].items()}
    return json.loads(json.dumps(spec))


@csrf_exempt
@require_GET
def openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(schema())


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

@api.get("/experiments", response={200: schemas.ExperimentPage, **BAD}, url_name="experiments",
         operation_id="listExperiments", summary="Experiments you own or that are shared with you, newest first",
         tags=["experiments"])
def experiments(request: HttpRequest, limit: int = _limit("experiments"), offset: int = OFFSET):
    qs = experiments_for_user(request.user).with_run_counts().select_related("owner")
    items, page = _page(request, qs, limit, offset)
    return {**page, "results": [experiment_data(e) for e in items]}


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


@api.post("/experiments", response={201: schemas.ExperimentOut, 403: schemas.Error, 413: schemas.Error,
                                   429: schemas.Error, **BAD},
          operation_id="createExperiment", summary="Create an experiment and queue its runs", tags=["experiments"])
def create_experiment(request: HttpRequest, payload: schemas.NewExperiment):
    given = {**payload.model_dump(exclude_unset=True), **(payload.model_extra or {})}
    data, unknown = _form_data(given)
    form = ExperimentForm(_Data({k: _as_form_value(v, k) for k, v in data.items()}), {}, user=request.user)
    valid = form.is_valid()
    experiment = form.save(owner=request.user) if valid and not unknown else None  # None: a quota refused it
    if unknown or experiment is None:
        fields = {**{k: list(v) for k, v in form.errors.items()}, **unknown}
        if not unknown and limit_refusal(form):
            raise ApiError(429, " ".join(form.non_field_errors()), "limit_exceeded", fields)
        raise ApiError(400, "The experiment is not valid.", "validation_error", fields)
    experiment = Experiment.objects.select_related("owner").with_run_counts().get(pk=experiment.pk)
    return Status(201, experiment_data(experiment, runs=list(experiment.runs.all())))


@api.get("/experiments/{int:id}", response={200: schemas.ExperimentOut, **ERRORS}, url_name="experiment",
         operation_id="getExperiment", summary="An experiment with its runs", tags=["experiments"])
def experiment(request: HttpRequest, pk: int = ID):
    exp = _experiment(request, pk)
    exp = Experiment.objects.with_run_counts().select_related("owner").get(pk=exp.pk)
    return experiment_data(exp, runs=list(exp.runs.all()))


@api.post("/experiments/{int:id}/cancel", response={200: schemas.ExperimentOut, 403: schemas.Error, **ERRORS},
          url_name="experiment_cancel", operation_id="cancelExperiment",
          summary="Cancel every active run (owner only)", tags=["experiments"])
def experiment_cancel(request: HttpRequest, pk: int = ID):
    exp = _experiment(request, pk, owner=True)
    do_cancel_experiment(exp, by=request.user.get_username())
    exp = Experiment.objects.with_run_counts().select_related("owner").get(pk=exp.pk)
    return experiment_data(exp, runs=list(exp.runs.all()))


@api.get("/experiments/{int:id}/runs", response={200: schemas.RunList, **ERRORS}, url_name="experiment_runs",
         operation_id="listRuns", summary="The runs of an experiment", tags=["runs"])
def experiment_runs(request: HttpRequest, pk: int = ID):
    exp = _experiment(request, pk)
    return {"results": [run_data(r) for r in exp.runs.all()]}


# --- runs ----------------------------------------------------------------------------------------------

@api.get("/runs/{int:id}", response={200: schemas.RunOut, **ERRORS}, url_name="run", operation_id="getRun",
         summary="A run: state, progress, latest evaluation, config", tags=["runs"])
def run(request: HttpRequest, pk: int = ID):
    return run_data(_run(request, pk))


@api.post("/runs/{int:id}/cancel", response={200: schemas.RunOut, 403: schemas.Error, **ERRORS},
          url_name="run_cancel", operation_id="cancelRun",
          summary="Cancel a run (owner only): queued runs at once, running ones after their step", tags=["runs"])
def run_cancel(request: HttpRequest, pk: int = ID):
    r = _run(request, pk, owner=True)
    do_cancel_run(r, by=request.user.get_username())
    r.refresh_from_db()
    return run_data(r)


@api.post("/runs/{int:id}/resume", response={200: schemas.RunOut, 403: schemas.Error, 409: schemas.Error, **ERRORS},
          url_name="run_resume", operation_id="resumeRun",
          summary="Resume a failed or cancelled run from its last checkpoint (owner only), keeping its metrics",
          tags=["runs"])
def run_resume(request: HttpRequest, pk: int = ID):
    r = _run(request, pk, owner=True)
    try:
        return do_resume_run(r, by=request.user.get_username()) and run_data(Run.objects.get(pk=r.pk))
    except NotResumable as exc:
        raise ApiError(409, str(exc), "not_resumable") from exc


def _names(request: HttpRequest) -> list[str]:
    names = []
    for raw in request.GET.getlist("names") + request.GET.getlist("name"):
        names += [n.strip() for n in raw.split(",") if n.strip()]
    return names


@api.get("/runs/{int:id}/metrics", response={200: schemas.MetricPage, **BAD}, url_name="run_metrics",
         operation_id="getRunMetrics", summary="Metric points, long format, ordered by (name, step)", tags=["runs"])
def run_metrics(request: HttpRequest, pk: int = ID,
                names: str | None = Query(None, description="Comma-separated metric names (or repeated); "
                                                            "`eval/*` matches a prefix."),
                step_min: int | None = Query(None, ge=0, le=MAX_INT), step_max: int | None = Query(None, ge=0, le=MAX_INT),
                limit: int = _limit("metrics"), offset: int = OFFSET):
    """Long format, ordered by (name, step). `names`: comma-separated or repeated; a name ending in '/*'
    matches a prefix (`eval/*`). `step_min`, `step_max`: inclusive."""
    r = _run(request, pk)
    qs = Metric.objects.filter(run=r)
    wanted = _names(request)
    if wanted:
        where = Q()
        for n in wanted:
            where |= Q(name__startswith=n[:-1]) if n.endswith("/*") else Q(name=n)
        qs = qs.filter(where)
    if step_min is not None:
        qs = qs.filter(step__gte=step_min)
    if step_max is not None:
        qs = qs.filter(step__lte=step_max)
    qs = qs.order_by("name", "step", "id").values_list("name", "step", "value", "wall_time")
    items, page = _page(request, qs, limit, offset)
    all_names = sorted(set(Metric.objects.filter(run=r).values_list("name", flat=True).distinct().order_by()))
    return {**page, "run": r.pk, "names": all_names, "results": [
        {"name": n, "step": s, "value": _finite(v), "wall_time": _finite(w)} for n, s, v, w in items]}


@api.get("/runs/{int:id}/samples", response={200: schemas.SamplePage, **BAD}, url_name="run_samples",
         operation_id="getRunSamples", summary="Samples of a run, ordered by (step, prompt, index)", tags=["runs"])
def run_samples(request: HttpRequest, pk: int = ID,
                step: str | None = Query(None, pattern=r"^(last|[0-9]{1,10})$",
                                         description="An evaluation step, or `last`."),
                limit: int = _limit("samples"), offset: int = OFFSET):
    """Samples of the run, ordered by (step, prompt, index); `step` picks one evaluation
    (`last`: the latest one with samples)."""
    r = _run(request, pk)
    qs = r.samples.all()
    if step == "last":
        last = r.samples.order_by("-step").values_list("step", flat=True).first()
        qs = qs.filter(step=last if last is not None else -1)
    elif step not in (None, ""):
        if int(step) > MAX_INT:
            raise ApiError(400, "Invalid query parameters.", fields={"step": ["An integer, or 'last'."]})
        qs = qs.filter(step=int(step))
    steps = sorted(set(r.samples.values_list("step", flat=True).distinct().order_by()))
    items, page = _page(request, qs.order_by("step", "prompt_id", "index"), limit, offset)
    results = [{**sample_data(s), "reward": _finite(s.reward)} for s in items]
    return {**page, "run": r.pk, "steps": steps, "results": results}


# --- ratings -------------------------------------------------------------------------------------------

def _rating_experiment(request: HttpRequest, pk: int) -> Experiment:
    if not 1 <= pk <= MAX_INT:
        raise not_found("experiment")
    found = raterable_experiments(request.user).select_related("owner").filter(pk=pk).first()
    if found is None:
        raise not_found("experiment")
    return found


@api.get("/experiments/{int:id}/rate/next", response={200: schemas.RateItem, **ERRORS}, url_name="rate_next",
         operation_id="nextRatingItem", summary="The next blind pair to rate (owner or invited rater)",
         tags=["ratings"])
def rate_next(request: HttpRequest, pk: int = ID):
    """The next item to rate, blind: two texts (a, b) and an opaque token to vote with."""
    exp = _rating_experiment(request, pk)
    with token_session(request):
        return Arena(exp).next_payload(request.user, request.session)


@api.post("/experiments/{int:id}/votes", response={201: schemas.VoteResult, 403: schemas.Error,
                                                      409: schemas.Error, **BAD},
          url_name="votes", operation_id="castVote", summary="Vote on an item", tags=["ratings"])
def votes(request: HttpRequest, payload: schemas.NewVote, pk: int = ID):
    exp = _rating_experiment(request, pk)
    with token_session(request):
        item = redeem_token(request.session, exp.pk, payload.token)
    arena = Arena(exp, step=item.step) if item else None
    texts = arena.texts(item) if arena else None
    if texts is None:
        raise ApiError(409, "This item has expired or was already rated; get another one.", "item_expired")
    _vote, created = do_cast_vote(exp, request.user, item, payload.outcome)
    reveal = arena.reveal(item, {**texts, "reward_a": _finite(texts["reward_a"]),
                                 "reward_b": _finite(texts["reward_b"])})
    return Status(201, {"outcome": payload.outcome, "created": created, "reveal": reveal,
                        "progress": arena.progress(request.user)})


@api.get("/experiments/{int:id}/leaderboard", response={200: schemas.Leaderboard, **BAD}, url_name="leaderboard",
         operation_id="getLeaderboard", summary="Bradley-Terry leaderboard of the human votes", tags=["ratings"])
def leaderboard(request: HttpRequest, pk: int = ID, step: int | None = Query(None, ge=0, le=MAX_INT),
                both_bad: Literal[tuple(BOTH_BAD_CHOICES)] = "tie"):  # type: ignore[valid-type]
    exp = leaderboard_experiments(request.user).select_related("owner").filter(pk=min(pk, MAX_INT + 1)).first()
    if exp is None:
        raise not_found("experiment")
    return as_json(build_leaderboard(exp, step=step, both_bad=both_bad))


# --- reports (when the reports app is installed) ---------------------------------------------------------

API_REPORT_FORMATS = ("json", "csv", "votes.csv", "md")  # fast ones; HTML and PDF: the pages' downloads
REPORT_CONTENT = {"200": {"description": "The report", "content": {
    "application/json": {"schema": {"type": "object"}}, "text/csv": {"schema": {"type": "string"}},
    "text/markdown": {"schema": {"type": "string"}}}}}


@api.get("/experiments/{int:id}/report.{fmt}", response={**ERRORS}, url_name="experiment_report",
         operation_id="getReport", summary="The experiment's report as a download (HTML and PDF: see `downloads`)",
         tags=["reports"], openapi_extra={"responses": REPORT_CONTENT})
def experiment_report(request: HttpRequest, fmt: str = Path(..., description=", ".join(API_REPORT_FORMATS)),
                      pk: int = ID):
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
