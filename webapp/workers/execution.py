"""Executing one claimed run inside a worker process: the heartbeat, the training call, the outcome."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection
from django.db.models.functions import Now

from webapp.experiments.actions import do_finish_run
from webapp.experiments.models import Run, Worker, db_now
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
        if not self.sink.lost and not self.sink._mine().update(heartbeat_at=Now()):
            self.sink.lost = True  # reaped or force-cancelled: the sink stops writing, the trainer stops
        Worker.objects.beat(self.hostname, current_run_id=self.sink.run_id)

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join()


class RunWatch:
    """What the pool's child checks, every PTLAB_WATCH_SECONDS, about the run its forked process trains.
    Returns why that process must be killed, or None: its run was requeued or is held by another attempt
    (a process stopped with SIGSTOP and resumed later), or it has written nothing for
    PTLAB_HUNG_AFTER_SECONDS (a hung process: its heartbeat thread may beat on, so progress is what counts)."""

    finish_grace_s = 60.0  # its run ended (by this attempt), yet the process has not exited

    def __init__(self, run_id: int, task_id: str):
        self.run_id, self.task_id = run_id, task_id
        self.claimed = False
        self.since = time.monotonic()
        self.ended_at: float | None = None

    def __call__(self) -> str | None:
        try:
            return self.look()
        except DatabaseError:
            connection.close()  # a broken connection (the database restarted) is never reopened by itself
            raise

    def look(self) -> str | None:
        hung_after = settings.PTLAB_HUNG_AFTER_SECONDS
        row = Run.objects.filter(pk=self.run_id).values("state", "task_id", "progress_at", "heartbeat_at").first()
        if row is None:
            return "its run was deleted"
        mine = row["task_id"] == self.task_id
        if not self.claimed:
            if not mine:  # not claimed yet (or not claimable: the process then returns at once)
                waited = time.monotonic() - self.since
                return f"it did not claim its run within {waited:.0f} s" if waited > hung_after else None
            self.claimed = True
        if not mine:
            return "its run was requeued and is held by another attempt now"
        if row["state"] == State.RUNNING:
            now = db_now()
            silent = (now - row["progress_at"]).total_seconds() if row["progress_at"] else 0.0
            if silent > hung_after:
                return f"it made no progress for {silent:.0f} s (PTLAB_HUNG_AFTER_SECONDS is {hung_after:.0f})"
            # Its heartbeat thread is silent too (a stopped process): the reaper requeues the run after
            # PTLAB_REAP_AFTER_SECONDS, unless the process holds the run's row locked mid-write; then only
            # killing it frees the row. Twice the reaper's wait: the reaper acts first when it can.
            quiet = (now - row["heartbeat_at"]).total_seconds() if row["heartbeat_at"] else 0.0
            if quiet > 2 * settings.PTLAB_REAP_AFTER_SECONDS:
                return f"it sent no heartbeat for {quiet:.0f} s (stopped?)"
            return None
        if row["state"] in (State.QUEUED, State.WAITING):
            return "its run was taken away from it and requeued"
        self.ended_at = self.ended_at or time.monotonic()
        if time.monotonic() - self.ended_at > self.finish_grace_s:
            return f"it did not exit within {self.finish_grace_s:.0f} s of its run's end"
        return None


def execute_in_fresh_process(run_id: int, hostname: str, task_id: str) -> str:
    """`execute` in a process of its own, forked for this run (webapp/workers/fresh_process.py), watched while
    it runs (RunWatch). If that process dies, or is killed, without finishing the run, the run is requeued or
    failed at once, not after the reaper's wait."""
    try:
        return call_in_fresh_process(execute, run_id, hostname, task_id, watch=RunWatch(run_id, task_id),
                                     watch_every=settings.PTLAB_WATCH_SECONDS)
    except ProcessDied as exc:
        connection.close()  # it may have been cut with the run's (a database restart): act on a fresh one
        if exc.killed_by_watch:
            log.warning("run #%s: killed its process: %s", run_id, exc)
        why = do_process_died(task_id, f"was killed by its worker: {exc}" if exc.killed_by_watch else str(exc),
                              stopped=exc.stopped)
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
    except RanksDied as exc:  # a rank was killed (OOM, a node's trouble): requeued, as a dead process is
        why = do_process_died(task_id, str(exc))
        return f"process died: {why or exc}"
    except (OperationalError, InterfaceError):
        # The database went away under the run (a restart, a failover, its connections cut): not the run's
        # fault, so not a failure. This process ends with the error and its worker requeues the run
        # (do_process_died; the reaper if the database is still down), which resumes from its last checkpoint.
        raise
    except Exception as exc:
        trace = exc.traceback_text if isinstance(exc, RankError) else traceback.format_exc()
        do_finish_run(run, State.FAILED, error=describe(exc), traceback=trace)
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

    cfg = from_dict(run.config)
    if cfg.num_processes > 1:
        return train_on_processes(run, sink, cfg.num_processes)
    return train(cfg, sink, run.out_dir)


class RanksDied(RuntimeError):
    """A run on several processes ended without a result and without an error of its own: a rank was killed."""


@dataclass
class ProcessesResult:
    step: int
    stopped: bool
    seconds: float


def train_on_processes(run: Run, sink: DatabaseSink, n: int) -> ProcessesResult:
    """Train `run` on `n` processes started with `accelerate launch` (webapp/workers/rank.py is each rank), while
    this process keeps the run's heartbeat. The launcher dies with this process and each rank with the launcher,
    so a forced cancel or a dead worker stops every rank; a rank killed alone makes torchrun stop the others."""
    from training.distributed import die_with_parent, launch_command

    if n > _gpus_here() > 0:
        raise RuntimeError(f"the run asks for {n} processes (one GPU each) and this worker has {_gpus_here()} GPUs")
    reports = Path(tempfile.mkdtemp(prefix=f"ptlab-run{run.pk}-"))
    try:
        cmd = launch_command(n, ["webapp.workers.rank", str(run.pk), str(sink.attempt), str(reports)],
                             config_file=settings.PTLAB_ACCELERATE_CONFIG)
        sink.note(f"training on {n} processes: accelerate launch"
                  + (f" --config_file {settings.PTLAB_ACCELERATE_CONFIG}" if settings.PTLAB_ACCELERATE_CONFIG else ""))
        code = subprocess.call(cmd, preexec_fn=die_with_parent, stdin=subprocess.DEVNULL)
        ranks = {int(f.stem[4:]): json.loads(f.read_text()) for f in reports.glob("rank*.json")}
    finally:
        shutil.rmtree(reports, ignore_errors=True)
    main = ranks.get(0, {})
    if code == 0 and "step" in main:
        return ProcessesResult(step=main["step"], stopped=main["stopped"], seconds=main["seconds"])
    own = [r for _, r in sorted(ranks.items()) if "error" in r and not r.get("collective")]
    if own:  # a rank's own error (a bug, a bad config, out of memory): the run fails with it
        raise RankError(own[0]["error"], own[0].get("traceback", ""))
    missing = sorted(set(range(n)) - set(ranks))
    raise RanksDied(f"lost rank {', '.join(map(str, missing)) or '?'} of {n} (accelerate launch exited with {code})")


class RankError(RuntimeError):
    def __init__(self, message: str, traceback_text: str):
        super().__init__(message)
        self.traceback_text = traceback_text


def _gpus_here() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def describe(exc: Exception) -> str:
    """One readable line for the run page (the traceback is kept separately)."""
    try:
        from training.config import ConfigError
        from training.models import ModelLoadError
    except ImportError:  # the training stack itself is broken: say what failed
        return f"{type(exc).__name__}: {exc}"[:2000]
    if isinstance(exc, RankError):  # already one line, from the rank that raised it
        return str(exc)[:2000]
    if isinstance(exc, ModelLoadError):
        return str(exc)[:2000]
    if isinstance(exc, ConfigError):
        return f"invalid config: {exc}"
    return f"{type(exc).__name__}: {exc}"[:2000]
