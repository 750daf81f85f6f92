"""Comparison pages: an experiment's runs, or runs picked from any of the user's experiments. Thin:
access through webapp.experiments.access, the data through the loader, figures from the core."""

from __future__ import annotations

import math

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from webapp.compare import loader
from webapp.compare.core.figures import X_MODES
from webapp.experiments.access import experiment_for_user, run_for_user
from webapp.experiments.models import Run
from webapp.experiments.references import public_status
from webapp.ratings.leaderboard import leaderboard_context
from webapp.ratings.models import leaderboard_experiments

POLL_SECONDS = 3


def _x_and_smoothing(request: HttpRequest) -> tuple[str, float]:
    x = request.GET.get("x", "step")
    try:
        smoothing = float(request.GET.get("smoothing", 0))
    except ValueError:
        smoothing = 0.0
    smoothing = min(max(smoothing, 0.0), 0.99) if math.isfinite(smoothing) else 0.0
    return (x if x in X_MODES else "step"), round(smoothing, 2)


def _chain(request: HttpRequest) -> bool:
    """Place runs that start from another run's model after it on the step axis."""
    return request.GET.get("chain") == "1"


def _step(request: HttpRequest) -> int | None:
    try:
        return int(request.GET["step"])
    except (KeyError, ValueError):
        return None


def _json(payload: dict) -> JsonResponse:
    return JsonResponse(payload, json_dumps_params={"separators": (",", ":")})


def _json_bytes(body: bytes) -> HttpResponse:
    return HttpResponse(body, content_type="application/json")


def _picked(request: HttpRequest) -> list[Run]:
    return loader.picked_runs(request.user, request.GET.getlist("run"))


def _page(request: HttpRequest, runs: list[Run], *, experiment=None, data_url: str, samples_url: str,
          picker=None) -> HttpResponse:
    x, smoothing = _x_and_smoothing(request)
    ids = ",".join(str(r.pk) for r in runs)
    context = {}
    if experiment is not None and runs and leaderboard_experiments(request.user).filter(pk=experiment.pk).exists():
        context.update(leaderboard_context(experiment))  # the human ranking beside the curves
    return render(request, "compare/compare.html", context | {
        "experiment": experiment, "runs": runs, **loader.statistics(runs), "x": x, "smoothing": smoothing,
        "x_modes": X_MODES.items(), "grid": loader.samples_grid(runs, _step(request)),
        "warnings": loader.comparability_warnings(runs), "data_url": data_url, "samples_url": samples_url,
        "poll_ms": POLL_SECONDS * 1000, "poll_seconds": POLL_SECONDS, "active": any(r.is_active for r in runs), "picker": picker,
        "chosen": {r.pk for r in runs}, "across_url": reverse("compare:runs") + (f"?run={ids}" if ids else ""),
        "experiment_names": list(dict.fromkeys(r.experiment.name for r in runs)), "run_ids": ids,
        "can_chain": any(r.depends_on_id for r in runs), "chain": _chain(request),
    })


# --- one experiment -----------------------------------------------------------------------------------


@login_required
@require_GET
def experiment_compare(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for_user(request.user, pk)
    return _page(request, loader.experiment_runs(experiment), experiment=experiment,
                 data_url=reverse("compare:experiment_data", args=[pk]),
                 samples_url=reverse("compare:experiment_samples", args=[pk]))


@login_required
@require_GET
def experiment_data(request: HttpRequest, pk: int) -> HttpResponse:
    """The figures and summary; polled by static/js/compare.js while runs train."""
    experiment = experiment_for_user(request.user, pk)
    x, smoothing = _x_and_smoothing(request)
    return _json_bytes(loader.figures_json(loader.experiment_runs(experiment), x, smoothing, _chain(request)))


@login_required
@require_GET
def experiment_samples(request: HttpRequest, pk: int) -> JsonResponse:
    experiment = experiment_for_user(request.user, pk)
    return _json(loader.samples_grid(loader.experiment_runs(experiment), _step(request)))


@login_required
@require_GET
def detectable(request: HttpRequest) -> JsonResponse:
    """The new-experiment form's estimate of the smallest detectable difference for its settings."""
    from webapp.compare.templatetags.power import detectable_text

    value, text = detectable_text(request.GET.get("prompts"), request.GET.get("samples"), request.GET.get("seeds"))
    return _json({"detectable": round(value, 4), "text": text})


# --- runs from any of the user's experiments -----------------------------------------------------------


@login_required
@require_GET
def runs_compare(request: HttpRequest) -> HttpResponse:
    runs = _picked(request)
    query = request.GET.urlencode()
    return _page(request, runs, data_url=f"{reverse('compare:runs_data')}?{query}",
                 samples_url=f"{reverse('compare:runs_samples')}?{query}", picker=loader.pickable_runs(request.user))


@login_required
@require_GET
def runs_data(request: HttpRequest) -> HttpResponse:
    x, smoothing = _x_and_smoothing(request)
    return _json_bytes(loader.figures_json(_picked(request), x, smoothing, _chain(request)))


@login_required
@require_GET
def runs_samples(request: HttpRequest) -> JsonResponse:
    return _json(loader.samples_grid(_picked(request), _step(request)))


# --- a run's own page ---------------------------------------------------------------------------------


@login_required
@require_GET
def run_live(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by a run's own page (static/js/run.js): state, progress, ETA and queue place, its four charts
    (the compare core's), and the latest samples when newer than the page's (`samples_step`). Strings are
    data: the page escapes them."""
    run = run_for_user(request.user, pk)
    last = run.samples.order_by("-step").values_list("step", flat=True).first()
    body = {"run": {**public_status(run.status()), "queue_position": run.queue_position()},  # no artifact paths
            "figures": loader.run_figures_payload(run)["figures"], "samples_step": last,
            "latest": sorted((k, v) for k, v in run.latest.items() if k.startswith("eval/"))}
    if last is not None and request.GET.get("samples_step") != str(last):
        body["samples"] = list(run.samples.filter(step=last).values("prompt_id", "index", "prompt", "completion",
                                                                  "reward"))
    if not run.is_active:
        body["downloads"] = [{"label": d["label"], "url": d["url"]} for d in run.downloads()]
    return JsonResponse(body)
