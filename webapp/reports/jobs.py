"""Report imports as background jobs: the request stores the file and an ImportJob row and enqueues the job's
id on the queue `io` (`do_create_import_job`); a worker reads, checks and writes it (`do_run_import_job`), the
write being one transaction that first takes the job's row and ends the job (`end_with`): an attempt that lost
its job (taken for dead, requeued) writes nothing, so a job makes exactly one experiment. The job page polls
the row."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from training import safejson
from webapp.experiments.jobs import Outcome, run_job
from webapp.reports.importing import ReportError, check, do_import_report
from webapp.reports.models import ImportJob

State = ImportJob.State


def do_create_import_job(owner, upload: UploadedFile) -> ImportJob:
    """Store the upload (already bounded by PTLAB_MAX_IMPORT_BYTES) with a queued job; send its id once the
    row is committed. With the broker down the job stays queued, says so on its page, and is sent again."""
    job = ImportJob(owner=owner, name=Path(upload.name or "report.json").name[:255], size=upload.size or 0)
    job.store(upload, f"{owner.pk}-{job.name}"[:100])
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


def import_report(job: ImportJob) -> Outcome:
    """Read, check and write the report (one transaction, with the job's end), or say why not, naming the
    JSON path."""

    def write() -> Outcome:
        experiment = do_import_report(doc, job.owner, checked=True)
        return (State.DONE, f"Imported \"{experiment.name}\" with {experiment.runs.count()} runs.",
                {"experiment": experiment})

    try:
        doc = _read(job)
        job.set_phase("checking the document", 30)
        check(doc)
        job.set_phase("writing the experiment", 60)
        return job.end_with(write)
    except ReportError as exc:
        return State.FAILED, str(exc), {}


def do_run_import_job(job_id: int) -> str:
    """queued -> running -> done (with the experiment) or failed (with the reason, naming the JSON path).
    Idempotent: a job that is not queued any more is left alone. Nothing is half-saved: the import is one
    transaction, and the file is removed once the job has ended."""
    return run_job(ImportJob, job_id, "reading the file", 10, import_report)
