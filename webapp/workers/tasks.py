"""Celery tasks. A task takes a run id and is idempotent; the Run row holds all state."""

from celery import shared_task

from webapp.workers.execution import execute_in_fresh_process
from webapp.workers.recovery import do_reap


@shared_task(bind=True, acks_late=False, ignore_result=True)
def train_run(self, run_id: int) -> str:
    """Train one run, in a process forked for it. Acked on receipt; the claim (queued -> running) makes a
    duplicate delivery a no-op."""
    return execute_in_fresh_process(run_id, self.request.hostname or "worker", self.request.id or "")


@shared_task(ignore_result=True)
def reap() -> list[str]:
    """For deployments that prefer Celery beat (on a queue an idle worker serves) to the worker's own
    supervisor thread or `manage.py reap`."""
    return do_reap()


@shared_task(ignore_result=True)
def answer_trial(trial_id: int) -> str:
    """Answer a "try a model" trial (queue `try`): each of its models' completion of its prompt."""
    from webapp.workers.trying import do_answer_trial

    return do_answer_trial(trial_id)
