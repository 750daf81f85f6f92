"""Recovery of runs whose worker or process went away: the reaper, a dead run process, a worker's
shutdown, messages the broker lost. Each decision is a conditional update (experiments.actions)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp.experiments.actions import do_finish_run, enqueue, requeue
from webapp.experiments.broker import queue_lengths
from webapp.experiments.models import Run, db_now

log = logging.getLogger(__name__)
State = Run.State


def do_reap(now=None) -> list[str]:
    """Find running runs whose worker went silent. Requeue them (they resume from their last checkpoint)
    or, after PTLAB_MAX_ATTEMPTS starts, fail them; force-cancel runs that ignored a stop request.
    Safe to run anywhere, any number of times at once. Returns what it did, one line each."""
    now = now or db_now()  # never this host's clock: heartbeats are written with the database's
    done = []
    silent_since = now - timezone.timedelta(seconds=settings.PTLAB_REAP_AFTER_SECONDS)
    for run in Run.objects.stale(silent_since):
        silence = (now - run.heartbeat_at).total_seconds()
        why = f"worker died: {run.claimed_by or 'its worker'} sent no heartbeat for {silence:.0f} s"
        if _orphaned(run, why, silent_since):
            done.append(f"run #{run.pk}: {why}")
    grace_start = now - timezone.timedelta(seconds=settings.PTLAB_CANCEL_GRACE_SECONDS)
    for run in Run.objects.overdue_stops(grace_start):
        if do_force_cancel(run):
            done.append(f"run #{run.pk}: killed after the cancel grace period")
    for line in done:
        log.warning("reaper: %s", line)
    return done


def do_process_died(task_id: str, how: str, *, stopped: bool = False) -> str | None:
    """The process training the run of task `task_id` ended without finishing it: act on the run at once,
    as the reaper would after its silence. `stopped`: it was told to stop (a worker's shutdown, Ctrl-C),
    not broken: the run is requeued whatever its attempts, as a worker shutting down hands its run back."""
    run = Run.objects.filter(task_id=task_id, state=State.RUNNING).first() if task_id else None
    why = f"the run's process {how}"
    if run is None or not _orphaned(run, why, may_fail=not stopped):
        return None
    log.warning("run #%s: %s", run.pk, why)
    return why


def _orphaned(run: Run, why: str, silent_since=None, *, may_fail: bool = True) -> bool:
    """A running run lost its process: cancel it if asked to stop, fail it after PTLAB_MAX_ATTEMPTS starts
    (`may_fail`), else requeue it (it resumes from its last checkpoint). False if it was not held any more."""
    if run.stop_requested:
        return do_finish_run(run, State.CANCELLED, note=f"cancelled ({why})", silent_since=silent_since)
    attempt = run.attempts - run.attempts_before_resume  # a resumed run gets the full limit again
    if may_fail and attempt >= settings.PTLAB_MAX_ATTEMPTS:
        limit = settings.PTLAB_MAX_ATTEMPTS  # hand-backs at worker shutdowns start runs beyond it
        which = f"attempt {attempt} of {limit}" if attempt <= limit else (
            f"attempt {attempt}, past the limit of {limit} after requeues at worker shutdowns")
        return do_finish_run(run, State.FAILED, error=f"{why} ({which}); giving up", silent_since=silent_since)
    then = (f"attempt {attempt + 1} of {settings.PTLAB_MAX_ATTEMPTS} will resume" if may_fail
            else "it resumes")
    return requeue(run, f"{why}; requeued ({then} from the last checkpoint)", silent_since=silent_since)


def do_requeue_orphans(hostname: str) -> list[int]:
    """A worker shutting down (its pool already stopped) hands back the run it held, at once: the next
    worker resumes it from its last checkpoint without waiting for the reaper."""
    requeued = []
    for run in Run.objects.filter(state=State.RUNNING, claimed_by=hostname):
        if requeue(run, f"worker {hostname} shut down; requeued (resumes from the last checkpoint)"):
            requeued.append(run.pk)
    return requeued


def do_resend_lost(queues: list[str], now=None) -> list[str]:
    """Send again the messages of runs queued in the database for longer than PTLAB_RESEND_AFTER_SECONDS
    while their queue in the broker is empty: the message was lost (Redis restarted without persistence,
    a worker died between taking it and claiming the run). Duplicates would be harmless (the claim), but
    a queue with messages waiting is left alone. Returns what it did, one line each."""
    now = now or db_now()
    lengths = queue_lengths(queues)
    cutoff = now - timezone.timedelta(seconds=settings.PTLAB_RESEND_AFTER_SECONDS)
    done = []
    for queue in queues:
        if lengths.get(queue) != 0:  # messages waiting, or a broker we cannot ask
            continue
        for run in Run.objects.trainable().filter(state=State.QUEUED, experiment__queue=queue, queued_at__lt=cutoff):
            with transaction.atomic():
                line = "its message was lost (broker restarted?): sent again"
                # Still queued and still not sent since the cutoff (a concurrent resend sets queued_at to now).
                # Not `queued_at=run.queued_at`: SQLite stores Now() with milliseconds and compares as text,
                # so the value read back never equals the stored one and nothing was ever sent again.
                if Run.objects.filter(pk=run.pk, state=State.QUEUED, queued_at__lt=cutoff).update(
                        log=run.with_log(line)):
                    enqueue(run, queue, ahead=run.attempts > 0)
                    done.append(f"run #{run.pk}: {line}")
    for line in done:
        log.warning("resend: %s", line)
    return done


def do_force_cancel(run: Run) -> bool:
    """The clean stop did not come within the grace period: kill the task's process."""
    from webapp.celery import app

    if run.task_id:
        app.control.revoke(run.task_id, terminate=True, signal="SIGKILL")
    grace = settings.PTLAB_CANCEL_GRACE_SECONDS
    return do_finish_run(run, State.CANCELLED, note=f"cancelled: killed after no clean stop within {grace:.0f} s")
