"""Dataset uploads as jobs: the request stores the file (streamed, bounded) with an UploadJob row; a worker on
the queue `io` checks every row and saves the dataset (`do_run_upload_job`), or the request runs the same job at
once when the file is small (PTLAB_INLINE_UPLOAD_BYTES). The job page polls the row."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from training.config import ConfigError
from webapp.datasets.actions import do_create_dataset
from webapp.datasets.models import Dataset, UploadJob
from webapp.experiments.actions import PUBLISH_RETRY, publish_on_commit  # one publish policy for every task

log = logging.getLogger(__name__)
UPLOAD_TASK = "webapp.datasets.tasks.run_upload"
State = UploadJob.State


def send_upload_job(job_id: int) -> None:
    """Publish the job id on the io queue (the tests replace this to record what was sent)."""
    from webapp.celery import app

    app.send_task(UPLOAD_TASK, args=(job_id,), queue=settings.PTLAB_IO_QUEUE, retry_policy=PUBLISH_RETRY)


def runs_inline(upload: UploadedFile) -> bool:
    """Whether the request itself runs the job (a small file: done before a page could poll it)."""
    return (upload.size or 0) <= settings.PTLAB_INLINE_UPLOAD_BYTES


def do_create_upload_job(owner, name: str, split: str, upload: UploadedFile, *, send: bool = True) -> UploadJob:
    """Store the upload with a queued job; send its id once the row is committed (unless `send` is False:
    the caller runs it)."""
    job = UploadJob(owner=owner, name=name, split=split or "train", size=upload.size or 0,
                    phase="waiting for a worker", progress=5)
    job.file.save(Path(upload.name or "data.jsonl").name, upload, save=False)
    try:
        with transaction.atomic():
            job.save()
    except BaseException:
        job.file.delete(save=False)
        raise
    if send:
        publish_on_commit(send_upload_job, job.pk, "upload job")
    return job


def do_run_upload_job(job_id: int) -> str:
    """queued -> running -> done (with the dataset) or failed (with the loader's message: line, row, column;
    the file removed, no dataset saved). Idempotent: a job that is not queued any more is left alone."""
    if not UploadJob.objects.filter(pk=job_id, state=State.QUEUED).update(
            state=State.RUNNING, phase="checking every row", progress=20):
        return "not queued"
    job = UploadJob.objects.select_related("owner").get(pk=job_id)
    dataset = Dataset(owner=job.owner, name=job.name, split=job.split, source=Dataset.Source.UPLOAD)
    dataset.file.name = job.file.name  # the stored upload becomes the dataset's file (removed if it fails)
    try:
        do_create_dataset(dataset)
    except ConfigError as exc:  # DatasetError included
        state, message, dataset = State.FAILED, exc.message, None
    except Exception:
        log.exception("upload job #%s failed", job_id)
        state, message, dataset = State.FAILED, "The dataset could not be read on the server; nothing was saved.", None
    else:
        state, message = State.DONE, f"Saved {dataset.rows} rows; check the column mapping."
    UploadJob.objects.filter(pk=job_id).update(state=state, message=message, dataset=dataset, progress=100,
                                               phase=state, **({"file": ""} if dataset is None else {}))
    return state
