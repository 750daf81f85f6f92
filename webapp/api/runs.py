"""The API's run endpoints: read, cancel, resume, and a run's metrics and samples."""

from __future__ import annotations

from django.db.models import Q
from django.http import Http404, HttpRequest
from ninja import Query

from webapp.api import schemas
from webapp.api.errors import ApiError, not_found
from webapp.api.ninja_api import BAD, ERRORS, api
from webapp.api.params import ID, MAX_INT, OFFSET, limit_param, paginate
from webapp.api.serializers import finite, run_data, sample_data
from webapp.experiments.access import run_for_user
from webapp.experiments.actions import NotResumable, do_cancel_run, do_resume_run
from webapp.experiments.models import Metric, Run


def _run(request: HttpRequest, pk: int, owner: bool = False) -> Run:
    if not 1 <= pk <= MAX_INT:
        raise not_found("run")
    try:
        return run_for_user(request.user, pk, write=owner)
    except Http404:
        raise not_found("run") from None


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
                limit: int = limit_param("metrics"), offset: int = OFFSET):
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
    items, page = paginate(request, qs, limit, offset)
    all_names = sorted(set(Metric.objects.filter(run=r).values_list("name", flat=True).distinct().order_by()))
    return {**page, "run": r.pk, "names": all_names, "results": [
        {"name": n, "step": s, "value": finite(v), "wall_time": finite(w)} for n, s, v, w in items]}


@api.get("/runs/{int:id}/samples", response={200: schemas.SamplePage, **BAD}, url_name="run_samples",
         operation_id="getRunSamples", summary="Samples of a run, ordered by (step, prompt, index)", tags=["runs"])
def run_samples(request: HttpRequest, pk: int = ID,
                step: str | None = Query(None, pattern=r"^(last|[0-9]{1,10})$",
                                         description="An evaluation step, or `last`."),
                limit: int = limit_param("samples"), offset: int = OFFSET):
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
    items, page = paginate(request, qs.order_by("step", "prompt_id", "index"), limit, offset)
    results = [{**sample_data(s), "reward": finite(s.reward)} for s in items]
    return {**page, "run": r.pk, "steps": steps, "results": results}
