"""Pages of the experiments app. Thin: access through access.py, validation in forms, logic on models/actions."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from webapp.experiments.access import experiment_for_user, experiments_for_user, run_for_user
from webapp.experiments.actions import (
    NotDeletable,
    NotResumable,
    do_cancel_experiment,
    do_cancel_run,
    do_create_trial,
    do_delete_experiment,
    do_resume_run,
    do_set_archived,
    do_set_star,
    do_update_experiment,
)
from webapp.experiments.broker import queue_lengths
from webapp.experiments.forms.edit import ExperimentEditForm
from webapp.experiments.forms.example import EXAMPLE
from webapp.experiments.forms.experiment import ExperimentForm, initial_from
from webapp.experiments.forms.listing import ExperimentListForm
from webapp.experiments.forms.trial import TrialForm
from webapp.experiments.models import Experiment, Run, Sample, Tag, Trial, Worker
from webapp.experiments.references import public_config, public_status

PAGE_SIZE = 50


@login_required
@require_GET
def experiment_list(request: HttpRequest) -> HttpResponse:
    """Search, filters, sort and pages. Queries do not grow with the rows shown (pinned by a test)."""
    visible = experiments_for_user(request.user)
    tags = list(Tag.objects.filter(experiments__in=visible).distinct().values_list("name", flat=True))
    form = ExperimentListForm(request.GET, tags=tags)
    # Page through ids (no grouping over every experiment), then annotate only the page's rows.
    page = Paginator(form.filter(visible, request.user).values_list("pk", flat=True), PAGE_SIZE).get_page(
        request.GET.get("page"))
    ids = list(page.object_list)
    rows = (Experiment.objects.filter(pk__in=ids).with_run_counts().with_best_reward().with_star(request.user)
            .select_related("owner", "saved_dataset").prefetch_related("tags").order_by())
    experiments = sorted(rows, key=lambda e: ids.index(e.pk))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "experiments/experiment_list.html", {
        "experiments": experiments, "page": page, "form": form, "tags": tags,
        "query": query.urlencode(), "filtered": any(v for k, v in form.values().items() if k != "sort"),
        "any_experiment": bool(ids) or visible.exists(),
    })


@login_required
def experiment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Rename it, write its notes, tag it (its owner)."""
    experiment = experiment_for_user(request.user, pk, write=True)
    form = ExperimentEditForm.for_experiment(experiment, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        do_update_experiment(experiment, **form.cleaned_data)
        messages.success(request, "Saved.")
        return redirect(experiment)
    return render(request, "experiments/experiment_edit.html", {"experiment": experiment, "form": form})


@login_required
@require_POST
def experiment_star(request: HttpRequest, pk: int) -> HttpResponse:
    """Star or unstar it: anyone who may see it, each their own star."""
    experiment = experiment_for_user(request.user, pk)
    do_set_star(experiment, request.user, request.POST.get("starred") == "1")
    return _back(request, experiment)


@login_required
@require_POST
def experiment_archive(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_for_user(request.user, pk, write=True)
    archived = request.POST.get("archived") == "1"
    do_set_archived(experiment, archived)
    messages.info(request, f"Archived “{experiment.name}”: the list shows it under “Archived”." if archived
                  else f"“{experiment.name}” is back in the list.")
    return _back(request, experiment)


@login_required
def experiment_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: what deleting it removes, and a button to confirm. POST: delete it."""
    experiment = experiment_for_user(request.user, pk, write=True)
    if request.method == "POST":
        try:
            do_delete_experiment(experiment)
        except NotDeletable as exc:
            messages.error(request, str(exc))
            return redirect("experiments:delete", pk=pk)
        messages.success(request, f"Deleted “{experiment.name}” and its files.")
        return redirect("experiments:list")
    return render(request, "experiments/experiment_delete.html", {
        "experiment": experiment, "gone": experiment.deletion_summary()})


def _back(request: HttpRequest, experiment: Experiment) -> HttpResponse:
    """To the page the form was on (the list keeps its filters), else the experiment's."""
    nxt = request.POST.get("next", "")
    if nxt and url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()},
                                               require_https=request.is_secure()):
        return redirect(nxt)
    return redirect(experiment)


@login_required
def experiment_new(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = ExperimentForm(request.POST, request.FILES, user=request.user)
        if form.is_valid() and (experiment := form.save(owner=request.user)) is not None:
            n = experiment.runs.count()
            messages.success(request, f"Started {n} run{pluralize(n)}.")
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
    runs = list(experiment.runs.select_related("depends_on"))
    for run in runs:
        run.experiment = experiment
    places = Run.objects.queue_positions(runs)
    for run in runs:
        run.queue_place = places.get(run.pk)
    return render(request, "experiments/experiment_detail.html", {
        "experiment": experiment, "runs": runs, "can_edit": experiment.is_owned_by(request.user),
        "shared_with": experiment.shared_with.order_by("username"), "tags": list(experiment.tags.all()),
        "starred": experiment.starred_by.filter(pk=request.user.pk).exists(),
    })


@login_required
@require_GET
def experiment_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by static/js/experiment.js every 2 s."""
    experiment = experiment_for_user(request.user, pk)
    runs = list(experiment.runs.all())
    for run in runs:
        run.experiment = experiment
    places = Run.objects.queue_positions(runs)
    status = [{**public_status(run.status()), "queue_position": places.get(run.pk)} for run in runs]
    return JsonResponse({"runs": status, "active": any(r["active"] for r in status), "now": timezone.now().isoformat()})


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
    """A run's own page: config and the command that reproduces it, live state and charts, samples, downloads."""
    run = run_for_user(request.user, pk)
    last = run.samples.order_by("-step").values_list("step", flat=True).first()
    samples = run.samples.filter(step=last) if last is not None else Sample.objects.none()
    final = {}
    for name, value in run.metrics.filter(name__startswith="eval/").order_by("step").values_list("name", "value"):
        final[name] = value  # the last value of each eval series
    config = public_config(run.config)
    return render(request, "experiments/run_detail.html", {
        "run": run, "experiment": run.experiment, "samples": samples, "sample_step": last,
        "final": sorted(final.items()), "can_edit": run.experiment.is_owned_by(request.user),
        "accuracy": final.get("eval/accuracy") if run.method == "reward" else None,
        "config_json": json.dumps(config, indent=2, sort_keys=True), "downloads": run.downloads(),
        "from_run": any(str(v).startswith("run:") for v in config.values()),
        "queue_position": run.queue_position(),
    })


@login_required
@require_GET
def run_download_model(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    run = run_for_user(request.user, pk)
    return _zip_response(run, run.model_dir, f"run-{run.pk}-model")


@login_required
@require_GET
def run_download_checkpoint(request: HttpRequest, pk: int, step: int) -> StreamingHttpResponse:
    run = run_for_user(request.user, pk)
    return _zip_response(run, run.checkpoints_dir / f"checkpoint-{step}", f"run-{run.pk}-checkpoint-{step}")


def _zip_response(run: Run, folder, name: str) -> StreamingHttpResponse:
    """The folder (one of the run's own, never a path from the request) as a streamed zip; 404 if absent."""
    from webapp.experiments.downloads import inside_artifacts, stream_zip

    if not run.out_dir or not inside_artifacts(folder):
        raise Http404("Nothing to download here.")
    response = StreamingHttpResponse(stream_zip(folder, name), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
def run_try(request: HttpRequest, pk: int) -> HttpResponse:
    """Try a run's model: a prompt, answered beside the base model and other runs by the `try` workers."""
    run = run_for_user(request.user, pk)
    form = TrialForm(request.POST or None, run=run, user=request.user)
    if request.method == "POST" and form.is_valid():
        trial = do_create_trial(run, request.user, **form.cleaned_data)
        return redirect(trial)
    recent = Trial.objects.filter(run=run, owner=request.user).prefetch_related("answers")[:10]
    return render(request, "experiments/run_try.html", {
        "run": run, "experiment": run.experiment, "form": form, "recent": recent})


def _trial_for_user(user, pk: int) -> Trial:
    """The user's own trial of a run they may still see; Http404 otherwise."""
    trial = Trial.objects.select_related("run", "run__experiment").filter(pk=pk, owner=user).first()
    if trial is None:
        raise Http404("No such trial.")
    run_for_user(user, trial.run_id)
    return trial


@login_required
@require_GET
def trial_detail(request: HttpRequest, pk: int) -> HttpResponse:
    trial = _trial_for_user(request.user, pk)
    return render(request, "experiments/trial_detail.html", {
        "trial": trial, "run": trial.run, "experiment": trial.run.experiment, "answers": list(trial.answers.all())})


@login_required
@require_GET
def trial_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by static/js/trial.js until every answer is in. Texts are model output: the page escapes them."""
    trial = _trial_for_user(request.user, pk)
    answers = [a.status() for a in trial.answers.all()]
    return JsonResponse({"answers": answers, "active": any(a["state"] in ("queued", "running") for a in answers)})


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
