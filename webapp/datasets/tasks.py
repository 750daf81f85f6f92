"""Celery tasks of the datasets app, on the CPU-light queue `io` (never behind a training run)."""

from celery import shared_task

from webapp.datasets.jobs import do_run_upload_job


@shared_task(ignore_result=True, acks_late=False)
def run_upload(job_id: int) -> str:
    """Check and save the dataset of one UploadJob; the row holds all state (a duplicate delivery is a no-op)."""
    return do_run_upload_job(job_id)
