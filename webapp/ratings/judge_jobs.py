"""Judge jobs: the owner asks a local judge (webapp.ratings.judge) to vote on an experiment from the leaderboard
or the API. The request saves a queued JudgeJob and publishes its id on the `try` queue once committed; the
worker there (it loads models already, and no training run holds it up) claims the job and runs the judge,
writing progress and the outcome on the row, which the leaderboard polls. The lifecycle (claim, heartbeat,
fenced writes and end, resend of a lost job) is every background job's: webapp.experiments.jobs."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Now
from django.utils import timezone

from webapp.experiments.jobs import JobLost, Outcome, run_job
from webapp.experiments.models import Experiment, Run
from webapp.experiments.quotas import QuotaExceeded, lock_owner
from webapp.experiments.references import BUILTIN_MODELS, model_path, public_text
from webapp.ratings.judge import calibration, do_judge_more, do_judge_votes, local_judge
from webapp.ratings.models import JudgeJob

log = logging.getLogger(__name__)
State = JudgeJob.State
# An active job unchanged this long has no worker (none serves `try`, so none resends it either: a lost one is
# resent within minutes); it blocks its experiment, so the next job's start fails it. The messages say "an hour".
STALE = timedelta(hours=1)
CHUNK = 16  # items per call of the judge: the job's progress moves after each
MAX_RUN_CHOICES = 100


class JudgeBusy(Exception):
    """The experiment has a judge job queued or running already (HTTP 409)."""


def judge_models(user) -> list[tuple[str, str]]:
    """(reference, label) of the models `user` may judge with: the built-ins, then the final models of their
    own finished runs (newest first). References only: the worker resolves them (references.model_path)."""
    runs = (Run.objects.filter(experiment__owner=user, state=Run.State.SUCCEEDED).exclude(out_dir="")
            .exclude(method="reward").select_related("experiment").order_by("-id")[:MAX_RUN_CHOICES])
    return ([(m, f"{m} (built in)") for m in BUILTIN_MODELS]
            + [(f"run:{r.pk}", f"{r.experiment.name} · {r.label} (#{r.pk})") for r in runs])


def has_final_model(ref: str) -> bool:
    """Whether a `run:<id>` reference's final model is saved (built-ins always are)."""
    if not ref.startswith("run:"):
        return True
    run = Run.objects.filter(pk=int(ref[4:])).first()
    return run is not None and any(v["key"] == "final" for v in run.model_versions())


def judge_name(ref: str) -> str:
    return JudgeJob(model=ref).name


def calibrated(experiment: Experiment, ref: str) -> bool:
    """Whether the judge on model `ref` passes the owner's threshold here (then it may label more pairs)."""
    return any(c.judge == judge_name(ref) and c.allowed for c in calibration(experiment, rounds=200))


def rate_refusal(user) -> str | None:
    """PTLAB_MAX_JUDGE_JOBS_PER_HOUR: the refusal's text, or None."""
    most = settings.PTLAB_MAX_JUDGE_JOBS_PER_HOUR
    recent = JudgeJob.objects.filter(requested_by=user, created__gte=timezone.now() - timedelta(hours=1)).count()
    if recent < most:
        return None
    return (f"At most {most} judge jobs per hour (PTLAB_MAX_JUDGE_JOBS_PER_HOUR): you started {recent} in the "
            "last hour. Try again later.")


def do_fail_stale(experiment: Experiment) -> int:
    """Fail the experiment's active jobs that nothing has touched for STALE, so that they no longer block it."""
    active = JudgeJob.objects.filter(experiment=experiment, updated__lt=timezone.now() - STALE)
    failed = {"state": State.FAILED, "progress": 100, "phase": State.FAILED, "ended": Now(), "updated": Now()}
    n = active.filter(state=State.QUEUED).update(
        **failed, message=f"No worker took it within an hour: is a worker serving the `{JudgeJob.queue()}` queue?")
    return n + active.filter(state=State.RUNNING).update(
        **failed, message="Its worker stopped reporting for an hour; start it again.")


def do_start_judge_job(experiment: Experiment, user, *, model: str, mode: str, limit: int | None = None) -> JudgeJob:
    """A queued job (arguments already validated: JudgeForm), sent once committed. Raises JudgeBusy while the
    experiment has an active job, QuotaExceeded over PTLAB_MAX_JUDGE_JOBS_PER_HOUR. With the broker down the
    job stays queued, and the supervisor of the `try` workers sends it again."""
    with transaction.atomic():
        lock_owner(user)
        do_fail_stale(experiment)
        if JudgeJob.objects.filter(experiment=experiment, state__in=JudgeJob.ACTIVE).exists():
            raise JudgeBusy("A judge is already queued or running on this experiment: wait for it to finish.")
        refused = rate_refusal(user)
        if refused:
            raise QuotaExceeded(refused)
        try:
            with transaction.atomic():  # the partial unique index settles a race the check above lost
                return JudgeJob.create_queued(experiment=experiment, requested_by=user, model=model, mode=mode,
                                              limit=limit if mode == JudgeJob.Mode.MORE else None)
        except IntegrityError:
            raise JudgeBusy("A judge is already queued or running on this experiment: wait for it to finish.") from None


class ChunkedJudge:
    """Calls `judge` CHUNK items at a time and tells `report(done, total)` after each call."""

    def __init__(self, judge, report, chunk: int = CHUNK):
        self.judge, self.report, self.chunk = judge, report, chunk

    def __call__(self, completions, prompts, reference):
        total, out = len(completions), []
        self.report(0, total)
        for i in range(0, total, self.chunk):
            part = slice(i, i + self.chunk)
            out.extend(self.judge(completions[part], prompts=prompts[part], reference=reference[part]))
            self.report(len(out), total)
        return out


def judge(job: JudgeJob) -> Outcome:
    """Load the judge's model and let it vote (its votes written only while this attempt holds the job), or
    say why not."""
    given = [0]

    def report(done: int, total: int) -> None:
        given[0] = total
        job.set_phase(f"judged {done} of {total} items", 5 + (90 * done // total if total else 90), items=total)

    try:
        chunked = ChunkedJudge(local_judge(model_path(job.model)), report)
        if job.mode == JudgeJob.Mode.MORE:
            votes = do_judge_more(job.experiment, chunked, job.name, job.limit or 0, writing=job.holding)
        else:
            votes = do_judge_votes(job.experiment, chunked, job.name, writing=job.holding)
    except PermissionError as exc:  # not calibrated (any more): the owner's to fix, not a fault
        return State.FAILED, str(exc), {}
    except JobLost:
        raise
    except Exception as exc:
        log.warning("judge job #%s failed", job.pk, exc_info=True)
        return State.FAILED, public_text(f"The judge failed: {type(exc).__name__}: {exc}")[:2000], {}
    return State.DONE, f"{job.name} cast {votes} votes on {given[0]} items.", {"votes": votes}


def do_run_judge_job(job_id: int) -> str:
    """queued -> running -> done (votes cast) or failed (the reason). Idempotent: a job that is not queued any
    more (a redelivered message) is left alone."""
    return run_job(JudgeJob, job_id, "loading the judge's model", 2, judge)
