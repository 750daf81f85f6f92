"""The API's experiment endpoints: list, create (validated by the experiments form, fed from JSON), read,
cancel, and the list of an experiment's runs."""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest
from ninja import Status

from webapp.api import schemas
from webapp.api.errors import ApiError, not_found
from webapp.api.ninja_api import BAD, ERRORS, api
from webapp.api.params import ID, MAX_INT, OFFSET, limit_param, paginate
from webapp.api.serializers import experiment_data, run_data
from webapp.experiments.access import experiment_for_user, experiments_for_user
from webapp.experiments.actions import do_cancel_experiment
from webapp.experiments.forms.experiment import ExperimentForm, limit_refusal, signal_values
from webapp.experiments.forms.fields import SIGNAL_KEYS
from webapp.experiments.methods import METHODS
from webapp.experiments.models import Experiment

# What a new experiment gets for a field the request leaves out (the model's defaults).
CREATE_DEFAULTS = {name: Experiment._meta.get_field(name).default
                   for name in Experiment.SETTINGS if name not in ("name", "task", "methods", "hyperparams")}


# The form's fields that the API takes in an object: their errors are named by the API's path.
API_NAMES = {"sweep_trials": "sweep.trials", "sweep_sampler": "sweep.sampler"}


def experiment_or_404(request: HttpRequest, pk: int, owner: bool = False) -> Experiment:
    """Visible to the user (owned or shared); owner-only for changes (webapp.experiments.access). Anything
    else: the API's 404."""
    if not 1 <= pk <= MAX_INT:
        raise not_found("experiment")
    try:
        return experiment_for_user(request.user, pk, write=owner)
    except Http404:
        raise not_found("experiment") from None


@api.get("/experiments", response={200: schemas.ExperimentPage, **BAD}, url_name="experiments",
         operation_id="listExperiments", summary="Experiments you own or that are shared with you, newest first",
         tags=["experiments"])
def experiments(request: HttpRequest, limit: int = limit_param("experiments"), offset: int = OFFSET):
    qs = experiments_for_user(request.user).with_run_counts().select_related("owner")
    items, page = paginate(request, qs, limit, offset)
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
    flat = {k: v for k, v in payload.items() if k not in ("hyperparams", "sweep")}
    sweep = payload.get("sweep") or {}  # validated by schemas.SweepIn; its fields are the form's
    for key, value in sweep.items():
        flat[f"sweep_{key}"] = value
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
        fields = {**{API_NAMES.get(k, k): list(v) for k, v in form.errors.items()}, **unknown}
        if not unknown and limit_refusal(form):
            raise ApiError(429, " ".join(form.non_field_errors()), "limit_exceeded", fields)
        raise ApiError(400, "The experiment is not valid.", "validation_error", fields)
    experiment = Experiment.objects.select_related("owner").with_run_counts().get(pk=experiment.pk)
    return Status(201, experiment_data(experiment, runs=list(experiment.runs.all())))


@api.get("/experiments/{int:id}", response={200: schemas.ExperimentOut, **ERRORS}, url_name="experiment",
         operation_id="getExperiment", summary="An experiment with its runs", tags=["experiments"])
def experiment(request: HttpRequest, pk: int = ID):
    exp = experiment_or_404(request, pk)
    exp = Experiment.objects.with_run_counts().select_related("owner").get(pk=exp.pk)
    return experiment_data(exp, runs=list(exp.runs.all()))


@api.post("/experiments/{int:id}/cancel", response={200: schemas.ExperimentOut, 403: schemas.Error, **ERRORS},
          url_name="experiment_cancel", operation_id="cancelExperiment",
          summary="Cancel every active run (owner only)", tags=["experiments"])
def experiment_cancel(request: HttpRequest, pk: int = ID):
    exp = experiment_or_404(request, pk, owner=True)
    do_cancel_experiment(exp, by=request.user.get_username())
    exp = Experiment.objects.with_run_counts().select_related("owner").get(pk=exp.pk)
    return experiment_data(exp, runs=list(exp.runs.all()))


@api.get("/experiments/{int:id}/runs", response={200: schemas.RunList, **ERRORS}, url_name="experiment_runs",
         operation_id="listRuns", summary="The runs of an experiment", tags=["runs"])
def experiment_runs(request: HttpRequest, pk: int = ID):
    exp = experiment_or_404(request, pk)
    return {"results": [run_data(r) for r in exp.runs.all()]}
