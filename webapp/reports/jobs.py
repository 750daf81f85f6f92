"""Report imports as background jobs: the request stores the file and an ImportJob row and enqueues the job's
id on the queue `io` (`do_create_import_job`); a worker reads, checks and writes it (`do_run_import_job`), the
write being one transaction as before. The job page polls the row."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from training import safejson
from webapp.experiments.actions import PUBLISH_RETRY, publish_on_commit  # one publish policy for every task
from webapp.reports.importing import ReportError, check, do_import_report
from webapp.reports.models import ImportJob

log = logging.getLogger(__name__)
IMPORT_TASK = "webapp.reports.tasks.run_import"
State = ImportJob.State


def send_import_job(job_id: int) -> None:
    """Publish the job id on the io queue (the tests replace this to record or run what was sent)."""
    from webapp.celery import app

    app.send_task(IMPORT_TASK, args=(job_id,), queue=settings.PTLAB_IO_QUEUE, retry_policy=PUBLISH_RETRY)


def do_create_import_job(owner, upload: UploadedFile) -> ImportJob:
    """Store the upload (already bounded by PTLAB_MAX_IMPORT_BYTES) with a queued job; send its id once the
    row is committed. With the broker down the job stays queued and says so on its page."""
    job = ImportJob(owner=owner, name=Path(upload.name or "report.json").name[:255], size=upload.size or 0,
                    phase="waiting for a worker", progress=5)
    job.file.save(f"{owner.pk}-{job.name}"[:100], upload, save=False)
    try:
        with transaction.atomic():
            job.save()
    except BaseException:
        job.file.delete(save=False)
        raise
    publish_on_commit(send_import_job, job.pk, "import job")
    return job


def _read(job: ImportJob):
    most = settings.PTLAB_MAX_IMPORT_BYTES
    if job.file.size > most:
        raise ReportError(f"The file has {job.file.size} bytes: at most {most} (PTLAB_MAX_IMPORT_BYTES).")
    with job.file.open("rb") as f:
        raw = f.read()
    try:
        return safejson.loads(raw.decode("utf-8-sig"), max_depth=settings.PTLAB_MAX_JSON_DEPTH)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReportError("Not a JSON file.") from None
    except safejson.JSONLimitError as exc:
        raise ReportError(f"Not accepted: {exc}") from None


def _phase(job_id: int, phase: str, progress: int) -> None:
    ImportJob.objects.filter(pk=job_id, state=State.RUNNING).update(phase=phase, progress=progress)


def do_run_import_job(job_id: int) -> str:
    """queued -> running -> done (with the experiment) or failed (with the reason, naming the JSON path).
    Idempotent: a job that is not queued any more is left alone. Nothing is half-saved: the import is one
    transaction, and the file is removed once the job has ended."""
    if not ImportJob.objects.filter(pk=job_id, state=State.QUEUED).update(
            state=State.RUNNING, phase="reading the file", progress=10):
        return "not queued"
    job = ImportJob.objects.select_related("owner").get(pk=job_id)
    try:
        doc = _read(job)
        _phase(job_id, "checking the document", 30)
        check(doc)
        _phase(job_id, "writing the experiment", 60)
        experiment = do_import_report(doc, job.owner, checked=True)
    except ReportError as exc:
        state, message, experiment = State.FAILED, str(exc), None
    except Exception:
        log.exception("import job #%s failed", job_id)
        state, message, experiment = State.FAILED, "The import failed on the server; nothing was saved.", None
    else:
        state, message = State.DONE, f"Imported \"{experiment.name}\" with {experiment.runs.count()} runs."
    ImportJob.objects.filter(pk=job_id).update(state=state, message=message, experiment=experiment, progress=100,
                                               phase=state, file="")
    job.file.delete(save=False)
    return state
