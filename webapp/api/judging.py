"""The API's side of the local judge: the owner starts a judge job (calibrate on the items people voted on, or
label N more pairs once calibrated) and reads it back with the judges' calibration. Validation in the
ratings app's JudgeForm, the job in webapp.ratings.judge_jobs; a worker on the `try` queue runs it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.http import Http404, HttpRequest
from ninja import Body, Status

from webapp.api import schemas
from webapp.api.errors import ApiError, not_found
from webapp.api.ninja_api import BAD, ERRORS, api
from webapp.api.params import ID
from webapp.experiments.access import experiment_for_user, experiments_for_user
from webapp.experiments.quotas import QuotaExceeded
from webapp.ratings.forms import JudgeForm
from webapp.ratings.judge import calibration
from webapp.ratings.judge_jobs import JudgeBusy, do_start_judge_job
from webapp.ratings.models import JudgeJob

BODY = Body(default_factory=dict)  # a JSON object; left out: {}
TYPES = {"model": (str,), "mode": (str,), "limit": (int, type(None))}


def judge_job_data(job: JudgeJob) -> dict:
    return {**job.status(), "calibration": [asdict(c) for c in calibration(job.experiment, rounds=200)]}


@api.post("/experiments/{int:id}/judge", response={201: dict[str, Any], 409: schemas.Error, 429: schemas.Error, **BAD},
          operation_id="startJudge", tags=["ratings"],
          summary="Let a local judge vote (owner): model (tiny, demo or run:<id> of a finished run of yours), mode "
                  "(calibrate: the items people voted on; more: `limit` (1-500) unrated pairs, only once calibrated)")
def start_judge(request: HttpRequest, pk: int = ID, body: dict[str, Any] = BODY):
    try:
        exp = experiment_for_user(request.user, pk, write=True)
    except Http404:
        raise not_found("experiment") from None
    data = {"model": "tiny", "mode": JudgeJob.Mode.CALIBRATE.value, "limit": None, **body}
    fields = {k: ["Not a known field."] for k in data if k not in TYPES}
    fields |= {k: [f"Must be {' or '.join('null' if t is type(None) else t.__name__ for t in types)}."]
               for k, types in TYPES.items() if isinstance(data[k], bool) or not isinstance(data[k], types)}
    if not fields:
        form = JudgeForm({k: "" if v is None else v for k, v in data.items()}, experiment=exp, user=request.user)
        if not form.is_valid():
            fields = {k: list(v) for k, v in form.errors.items()}
    if fields:
        raise ApiError(400, "The judge cannot start.", "validation_error", fields)
    try:
        job = do_start_judge_job(exp, request.user, **form.cleaned_data)
    except JudgeBusy as e:
        raise ApiError(409, str(e), "judge_busy") from None
    except QuotaExceeded as e:
        raise ApiError(429, str(e)) from None
    return Status(201, job.status())


@api.get("/judge-jobs/{int:id}", response={200: dict[str, Any], **ERRORS}, url_name="judge_job",
         operation_id="getJudgeJob", tags=["ratings"],
         summary="A judge job (owner): state, progress, votes cast, error, and every judge's calibration against "
                 "people on its experiment")
def judge_job(request: HttpRequest, pk: int = ID):
    job = (JudgeJob.objects.select_related("experiment")
           .filter(pk=pk, experiment__in=experiments_for_user(request.user, write=True)).first())
    if job is None:
        raise not_found("judge job")
    return judge_job_data(job)
