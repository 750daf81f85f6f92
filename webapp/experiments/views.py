"""Pages of the experiments app. Thin: access through access.py, validation in forms, logic on models/actions."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from webapp.experiments.access import experiment_for_user, experiments_for_user, run_for_user
from webapp.experiments.actions import NotResumable, do_cancel_experiment, do_cancel_run, do_resume_run
from webapp.experiments.broker import queue_lengths
from webapp.experiments.forms import EXAMPLE, ExperimentForm, initial_from
from webapp.experiments.models import Experiment, Run, Sample, Worker
from webapp.experiments.references import public_config


@login_required
@require_GET
def experiment_list(request: HttpRequest) -> HttpResponse:
    experiments = experiments_for_user(request.user).with_run_counts().select_related("owner", "saved_dataset")
    return render(request, "experiments/experiment_list.html", {"experiments": experiments})


@login_required
def experiment_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = ExperimentForm(request.POST, request.FILES, user=request.user)
        if form.is_valid():
            experiment = form.save(owner=request.user)
            messages.success(request, f"Started {experiment.runs.count()} runs.")
            return redirect(experiment)
    else:
        form = ExperimentForm(initial=EXAMPLE, user=request.user)
    return render(request, "experiments/experiment_form.html", {"form": form})


@login_required
@require_GET
def experiment_clone(request: HttpRequest, pk: int) -> HttpResponse:
    source = experiment_for_user(request.user, pk)
    form = ExperimentForm(initial=initial_from(source), user=request.user)
    return render(request, "experiments/experiment_form.html", {"form": form, "source": source})


@login_required
@require_GET
def experiment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for_user(request.user, pk)
    runs = experiment.runs.select_related("depends_on")
    return render(request, "experiments/experiment_detail.html", {
        "experiment": experiment, "runs": runs, "can_edit": experiment.is_owned_by(request.user),
        "shared_with": experiment.shared_with.order_by("username"),
    })


@login_required
@require_GET
def experiment_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by static/js/experiment.js every 2 s."""
    experiment = experiment_for_user(request.user, pk)
    runs = [run.status() for run in experiment.runs.all()]
    return JsonResponse({"runs": runs, "active": any(r["active"] for r in runs), "now": timezone.now().isoformat()})


@login_required
@require_POST
def experiment_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for_user(request.user, pk, write=True)
    do_cancel_experiment(experiment, by=request.user.get_username())
    messages.info(request, "Cancelling: queued runs are cancelled, running runs stop after their current step.")
    return redirect(experiment)


@login_required
@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = run_for_user(request.user, pk, write=True)
    do_cancel_run(run, by=request.user.get_username())
    messages.info(request, f"Cancelling {run.label}.")
    return redirect(run.experiment)


@login_required
@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    run = run_for_user(request.user, pk, write=True)
    try:
        run = do_resume_run(run, by=request.user.get_username())
    except NotResumable as exc:
        messages.error(request, str(exc))
        return redirect(run)
    messages.info(request, f"Resuming {run.label} from its last checkpoint." if run.state == Run.State.QUEUED
                  else f"{run.label} waits for the run it starts from.")
    return redirect(run)


@login_required
@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = run_for_user(request.user, pk)
    last = run.samples.order_by("-step").values_list("step", flat=True).first()
    samples = run.samples.filter(step=last) if last is not None else Sample.objects.none()
    final = {}
    for name, value in run.metrics.filter(name__startswith="eval/").order_by("step").values_list("name", "value"):
        final[name] = value  # the last value of each eval series
    return render(request, "experiments/run_detail.html", {
        "run": run, "experiment": run.experiment, "samples": samples, "sample_step": last,
        "final": sorted(final.items()), "can_edit": run.experiment.is_owned_by(request.user),
        "accuracy": final.get("eval/accuracy") if run.method == "reward" else None,
        "config_json": json.dumps(public_config(run.config), indent=2, sort_keys=True),
    })


@login_required
@require_GET
def worker_list(request: HttpRequest) -> HttpResponse:
    workers = list(Worker.objects.select_related("current_run", "current_run__experiment"))
    # Other users' experiment names are theirs: only owners and those it is shared with see them here.
    visible = set(Run.objects.filter(pk__in=[w.current_run_id for w in workers if w.current_run_id],
                                     experiment__in=Experiment.objects.visible_to(request.user))
                  .values_list("pk", flat=True))
    for w in workers:
        w.run_visible = w.current_run_id in visible
    counts = (Run.objects.trainable().filter(state=Run.State.QUEUED).values("experiment__queue")
              .annotate(n=Count("id")).order_by())
    queued = {row["experiment__queue"]: row["n"] for row in counts}
    names = sorted({"train", *queued, *(q for w in workers for q in w.queues.split(",") if q)})
    lengths = queue_lengths(names)
    queues = [{"name": n, "queued_runs": queued.get(n, 0), "messages": lengths.get(n)} for n in names]
    return render(request, "experiments/worker_list.html", {
        "workers": workers, "queues": queues, "broker_url": _redact(settings.CELERY_BROKER_URL),
        "stale_after": settings.PTLAB_WORKER_STALE_SECONDS,
    })


def _redact(url: str) -> str:
    """The broker URL without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
