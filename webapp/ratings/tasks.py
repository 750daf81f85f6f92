"""Celery tasks of the ratings app, on the `try` queue (its worker loads models; no training run holds it up)."""

from celery import shared_task

from webapp.ratings.judge_jobs import do_run_judge_job


@shared_task(ignore_result=True, acks_late=False)
def run_judge_job(job_id: int) -> str:
    """Run one JudgeJob; the row holds all state (a duplicate delivery is a no-op)."""
    return do_run_judge_job(job_id)
