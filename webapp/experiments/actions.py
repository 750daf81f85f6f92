"""State changes that touch several rows, each under one transaction (`do_*`).

Every transition out of `running` is a conditional UPDATE on (state, attempts): whoever loses a race
(a clean finish against a forced cancel, a slow worker against the reaper) changes nothing."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from webapp.experiments.broker import queue_lengths
from webapp.experiments.models import Experiment, Run

log = logging.getLogger(__name__)
State = Run.State


def enqueue(run: Run, queue: str) -> None:
    """Send the run id to the workers once the transaction that made it `queued` has committed."""
    from webapp.experiments.tasks import train_run

    run_id = run.pk
    Run.objects.filter(pk=run_id).update(queued_at=timezone.now())
    transaction.on_commit(lambda: train_run.apply_async((run_id,), queue=queue))


def do_create_experiment(experiment: Experiment, dataset: UploadedFile | None = None) -> Experiment:
    """Save an (unsaved, validated) experiment with its runs: one per method and seed. With
    `rl_from_sft`, the other methods wait for the SFT run of their seed and start from its model."""
    with transaction.atomic():
        if dataset is not None:
            experiment.dataset.save(Path(dataset.name).name, dataset, save=False)
        experiment.save()
        for seed in range(experiment.seeds):
            sft = None
            for method in sorted(experiment.methods, key=lambda m: m != "sft"):  # SFT first: others may wait for it
                waits = experiment.rl_from_sft and method != "sft" and sft is not None
                run = Run.objects.create(
                    experiment=experiment, method=method, seed=seed, config=experiment.run_config(method, seed),
                    depends_on=sft if waits else None, state=State.WAITING if waits else State.QUEUED,
                    log=f"waiting for {sft.label}" if waits else "queued")
                # A random suffix: a run never resumes from another run's checkpoints, even if ids restart
                # (a database reset while the artifacts stay).
                run.out_dir = str(settings.ARTIFACT_ROOT / "runs" / f"{run.pk}-{secrets.token_hex(4)}")
                run.save(update_fields=["out_dir"])
                if method == "sft":
                    sft = run
                if not waits:
                    enqueue(run, experiment.queue)
    return experiment


def do_finish_run(run: Run, state: str, *, error: str = "", traceback: str = "", note: str = "",
                  silent_since=None) -> bool:
    """running -> succeeded / failed / cancelled, if this attempt still holds the run (and, for the reaper,
    `silent_since` given, has still not beaten since then); then release or fail the runs waiting for it.
    Returns False when the run had already been taken away (or has beaten meanwhile)."""
    with transaction.atomic():
        run.refresh_from_db(fields=["log"])  # not `attempts`: the caller's value is its claim token
        line = note or (f"{state}: {error}" if error else state)
        done = _held(run, silent_since).update(
            state=state, error=error[:10_000], traceback=traceback, finished_at=timezone.now(), eta_s=None,
            phase="done" if state == State.SUCCEEDED else state, log=run.with_log(line))
        if not done:
            return False
        _settle_dependents(run, state)
        _store_series_on_commit([run.pk])
    return True


def _store_series_on_commit(run_ids: list[int]) -> None:
    """Once a run's end has committed, tell the apps above (`runs_ended`: the comparison stores the run's
    downsampled series). Receivers never raise; without the series the pages read the rows."""
    from webapp.experiments.signals import runs_ended

    transaction.on_commit(lambda: runs_ended.send(sender=Run, run_ids=run_ids))


def _settle_dependents(run: Run, state: str) -> None:
    waiting = run.dependents.filter(state=State.WAITING).select_related("experiment")
    if state == State.SUCCEEDED:
        model = str(run.model_dir)
        for dep in waiting:
            # Start from the SFT model, and measure KL against it: it is this run's starting point.
            dep.config = {**dep.config, "model": model, "reference_model": model}
            dep.state = State.QUEUED
            dep.log = dep.with_log(f"{run.label} succeeded: starting from its model")
            dep.save(update_fields=["config", "state", "log"])
            enqueue(dep, dep.experiment.queue)
        return
    reason = f"{run.label} (run #{run.pk}) {state}; this run starts from its model, so it cannot run"
    failed = [dep.pk for dep in waiting if Run.objects.filter(pk=dep.pk, state=State.WAITING).update(
        state=State.FAILED, error=reason, finished_at=timezone.now(), log=dep.with_log(reason))]
    if failed:
        _store_series_on_commit(failed)


def do_cancel_run(run: Run, by: str = "") -> None:
    """Waiting and queued runs are cancelled at once (a message still in the queue is then ignored by the
    claim). A running run is asked to stop: it stops cleanly at its next step, keeping what it logged;
    the worker's supervisor kills it after PTLAB_CANCEL_GRACE_SECONDS if it has not."""
    who = f" by {by}" if by else ""
    with transaction.atomic():
        run.refresh_from_db()
        if run.state in (State.WAITING, State.QUEUED):
            if Run.objects.filter(pk=run.pk, state=run.state).update(
                    state=State.CANCELLED, finished_at=timezone.now(), phase="cancelled",
                    log=run.with_log(f"cancelled{who}")):
                _settle_dependents(run, State.CANCELLED)
                _store_series_on_commit([run.pk])  # a requeued run has metrics of its earlier attempts
        elif run.state == State.RUNNING and not run.stop_requested:
            Run.objects.filter(pk=run.pk, state=State.RUNNING).update(
                stop_requested=True, stop_requested_at=timezone.now())


def do_cancel_experiment(experiment: Experiment, by: str = "") -> None:
    with transaction.atomic():
        # Waiting runs first, so they end `cancelled` rather than failed for their SFT run's cancellation.
        for state in (State.WAITING, State.QUEUED, State.RUNNING):
            for run in experiment.runs.filter(state=state):
                do_cancel_run(run, by)


def do_force_cancel(run: Run) -> bool:
    """The clean stop did not come within the grace period: kill the task's process."""
    from webapp.celery import app

    if run.task_id:
        app.control.revoke(run.task_id, terminate=True, signal="SIGKILL")
    grace = settings.PTLAB_CANCEL_GRACE_SECONDS
    return do_finish_run(run, State.CANCELLED, note=f"cancelled: killed after no clean stop within {grace:.0f} s")


def do_reap(now=None) -> list[str]:
    """Find running runs whose worker went silent. Requeue them (they resume from their last checkpoint)
    or, after PTLAB_MAX_ATTEMPTS starts, fail them; force-cancel runs that ignored a stop request.
    Safe to run anywhere, any number of times at once. Returns what it did, one line each."""
    now = now or timezone.now()
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
    if may_fail and run.attempts >= settings.PTLAB_MAX_ATTEMPTS:
        limit = settings.PTLAB_MAX_ATTEMPTS  # hand-backs at worker shutdowns start runs beyond it
        which = f"attempt {run.attempts} of {limit}" if run.attempts <= limit else (
            f"attempt {run.attempts}, past the limit of {limit} after requeues at worker shutdowns")
        return do_finish_run(run, State.FAILED, error=f"{why} ({which}); giving up", silent_since=silent_since)
    then = (f"attempt {run.attempts + 1} of {settings.PTLAB_MAX_ATTEMPTS} will resume" if may_fail
            else "it resumes")
    return _requeue(run, f"{why}; requeued ({then} from the last checkpoint)", silent_since=silent_since)


def do_requeue_orphans(hostname: str) -> list[int]:
    """A worker shutting down (its pool already stopped) hands back the run it held, at once: the next
    worker resumes it from its last checkpoint without waiting for the reaper."""
    requeued = []
    for run in Run.objects.filter(state=State.RUNNING, claimed_by=hostname):
        if _requeue(run, f"worker {hostname} shut down; requeued (resumes from the last checkpoint)"):
            requeued.append(run.pk)
    return requeued


def do_resend_lost(queues: list[str], now=None) -> list[str]:
    """Send again the messages of runs queued in the database for longer than PTLAB_RESEND_AFTER_SECONDS
    while their queue in the broker is empty: the message was lost (Redis restarted without persistence,
    a worker died between taking it and claiming the run). Duplicates would be harmless (the claim), but
    a queue with messages waiting is left alone. Returns what it did, one line each."""
    now = now or timezone.now()
    lengths = queue_lengths(queues)
    cutoff = now - timezone.timedelta(seconds=settings.PTLAB_RESEND_AFTER_SECONDS)
    done = []
    for queue in queues:
        if lengths.get(queue) != 0:  # messages waiting, or a broker we cannot ask
            continue
        for run in Run.objects.filter(state=State.QUEUED, experiment__queue=queue, queued_at__lt=cutoff):
            with transaction.atomic():
                line = "its message was lost (broker restarted?): sent again"
                if Run.objects.filter(pk=run.pk, state=State.QUEUED, queued_at=run.queued_at).update(
                        log=run.with_log(line)):
                    enqueue(run, queue)
                    done.append(f"run #{run.pk}: {line}")
    for line in done:
        log.warning("resend: %s", line)
    return done


def _held(run: Run, silent_since=None):
    """The run, if the attempt `run` was read at still holds it; with `silent_since`, only if it has sent no
    heartbeat since then either (a reaper that read it as silent must not act on a run that beat meanwhile)."""
    held = Run.objects.filter(pk=run.pk, state=State.RUNNING, attempts=run.attempts)
    return held if silent_since is None else held.filter(heartbeat_at__lt=silent_since)


def _requeue(run: Run, line: str, silent_since=None) -> bool:
    with transaction.atomic():
        if not _held(run, silent_since).update(
                state=State.QUEUED, claimed_by="", phase="queued", eta_s=None, log=run.with_log(line)):
            return False
        enqueue(run, run.experiment.queue)
    return True
