"""Celery tasks of the reports app, on the CPU-light queue `io` (never behind a training run)."""

from celery import shared_task

from webapp.reports.jobs import do_run_import_job


@shared_task(ignore_result=True, acks_late=False)
def run_import(job_id: int) -> str:
    """Import the report of one ImportJob; the row holds all state (a duplicate delivery is a no-op)."""
    return do_run_import_job(job_id)
