"""Dataset uploads as jobs: the request stores the file (streamed, bounded) with an UploadJob row; a worker on
the queue `io` checks every row and saves the dataset (`do_run_upload_job`), or the request runs the same job at
once when the file is small (PTLAB_INLINE_UPLOAD_BYTES). The dataset is saved in one transaction that first
takes the job's row and ends the job (`end_with`): an attempt that lost its job saves nothing, so a job makes
exactly one dataset. The job page polls the row."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from training.config import ConfigError
from webapp.datasets.actions import check_dataset
from webapp.datasets.models import Dataset, UploadJob
from webapp.experiments.jobs import Outcome, run_job

State = UploadJob.State


def runs_inline(upload: UploadedFile) -> bool:
    """Whether the request itself runs the job (a small file: done before a page could poll it)."""
    return (upload.size or 0) <= settings.PTLAB_INLINE_UPLOAD_BYTES


def do_create_upload_job(owner, name: str, split: str, upload: UploadedFile, *, send: bool = True) -> UploadJob:
    """Store the upload with a queued job; send its id once the row is committed (unless `send` is False:
    the caller runs it)."""
    job = UploadJob(owner=owner, name=name, split=split or "train", size=upload.size or 0)
    job.store(upload, Path(upload.name or "data.jsonl").name, send=send)
    return job


def check_upload(job: UploadJob) -> Outcome:
    """Save the stored upload as a dataset, or say why not (the loader's message: line, row, column)."""
    dataset = Dataset(owner=job.owner, name=job.name, split=job.split, source=Dataset.Source.UPLOAD)
    dataset.file.name = job.file.name  # the stored upload becomes the dataset's file (the job removes it if it fails)
    try:
        check_dataset(dataset)
    except ConfigError as exc:  # DatasetError included
        return State.FAILED, exc.message, {}

    def save() -> Outcome:
        dataset.save()
        return State.DONE, f"Saved {dataset.rows} rows; check the column mapping.", {"dataset": dataset}

    return job.end_with(save)


def do_run_upload_job(job_id: int) -> str:
    """queued -> running -> done (with the dataset) or failed (with the loader's message; the file removed, no
    dataset saved). Idempotent: a job that is not queued any more is left alone."""
    return run_job(UploadJob, job_id, "checking every row", 20, check_upload)
