"""Executing one claimed run inside a worker process: the heartbeat, the training call, the outcome."""

from __future__ import annotations

import logging
import threading
import traceback

from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from webapp.experiments.actions import do_finish_run
from webapp.experiments.models import Run, Worker
from webapp.workers.fresh_process import ProcessDied, call_in_fresh_process
from webapp.workers.recovery import do_process_died
from webapp.workers.sink import DatabaseSink, no_fsync_wait

log = logging.getLogger(__name__)
State = Run.State


class Heartbeat(threading.Thread):
    """Beats for the run and its worker while training runs (also through long loads and evaluations,
    when the sink writes nothing). The reaper requeues a run whose heartbeat stops."""

    def __init__(self, sink: DatabaseSink, hostname: str):
        super().__init__(name=f"heartbeat-run-{sink.run_id}", daemon=True)
        self.sink, self.hostname = sink, hostname
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.wait(settings.PTLAB_HEARTBEAT_SECONDS):
                try:
                    self.beat()
                except Exception:  # a database hiccup must not end the beat; the next one may pass
                    log.exception("heartbeat of run %s failed", self.sink.run_id)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection

    def beat(self) -> None:
        no_fsync_wait()  # a beat is visible to the reaper at once, not after a WAL flush that a busy disk delays
        if not self.sink.lost and not self.sink._mine().update(heartbeat_at=timezone.now()):
            self.sink.lost = True  # reaped or force-cancelled: the sink stops writing, the trainer stops
        Worker.objects.beat(self.hostname, current_run_id=self.sink.run_id)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join()


def execute_in_fresh_process(run_id: int, hostname: str, task_id: str) -> str:
    """`execute` in a process of its own, forked for this run (webapp.workers.fresh_process.py). If that
    process dies without finishing the run, the run is requeued or failed at once, not after the reaper's wait."""
    try:
        return call_in_fresh_process(execute, run_id, hostname, task_id)
    except ProcessDied as exc:
        why = do_process_died(task_id, str(exc), stopped=exc.stopped)
        Worker.objects.filter(hostname=hostname, current_run_id=run_id).update(current_run=None)
        connection.close()  # the next run's fork must not inherit it
        return f"process died: {why or exc}"


def execute(run_id: int, hostname: str, task_id: str) -> str:
    """Claim the run and train it. Returns the final state, or "skipped" when the run was not queued
    (a duplicate message, a cancelled run): the claim makes a second delivery harmless."""
    run = Run.objects.claim(run_id, hostname, task_id)
    if run is None:
        return "skipped"
    sink = DatabaseSink(run)
    sink.note(f"attempt {run.attempts} on {hostname}")
    Worker.objects.beat(hostname, current_run_id=run.pk)
    try:
        with Heartbeat(sink, hostname):
            result = _train(run, sink)
    except Exception as exc:
        do_finish_run(run, State.FAILED, error=describe(exc), traceback=traceback.format_exc())
        return State.FAILED
    finally:
        Worker.objects.filter(hostname=hostname, current_run_id=run.pk).update(current_run=None)
    state = State.CANCELLED if result.stopped else State.SUCCEEDED
    seconds = f"{result.seconds:.1f} s"
    note = f"stopped at step {result.step} after {seconds}" if result.stopped else f"finished in {seconds}"
    do_finish_run(run, state, note=note)
    return state


def _train(run: Run, sink: DatabaseSink):
    from training.config import from_dict  # torch and TRL load in the worker only, never in the web server
    from training.runner import run as train

    return train(from_dict(run.config), sink, run.out_dir)


def describe(exc: Exception) -> str:
    """One readable line for the run page (the traceback is kept separately)."""
    try:
        from training.config import ConfigError
        from training.models import ModelLoadError
    except ImportError:  # the training stack itself is broken: say what failed
        return f"{type(exc).__name__}: {exc}"[:2000]
    if isinstance(exc, ModelLoadError):
        return str(exc)[:2000]
    if isinstance(exc, ConfigError):
        return f"invalid config: {exc}"
    return f"{type(exc).__name__}: {exc}"[:2000]
