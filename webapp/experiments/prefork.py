"""The worker's process pool: Celery's prefork pool, fixed for one run per process.

Every run gets a fresh process (CELERY_WORKER_MAX_TASKS_PER_CHILD = 1): the child exits after its run and
the pool forks the next one. Celery's pool (issue 3, measured with bench/web_speed.py; bench/RESULTS.md)
had two problems when the next run's message came in meanwhile:

1. On the finished run's result it marks the exiting child as free and may write the next job into its
   pipe; the child never reads it. Usually the pool notices at the child's exit and sends the job to the
   next child, but once in 159 runs sent as the previous one ended the job was lost: the run stayed queued
   until the worker's resend of lost messages (PTLAB_RESEND_AFTER_SECONDS, 60 s). NOT changed here: a first
   fix (never marking such a child free again) once left a job received just as a child finished unwritten
   for 10 minutes (integration test, 2026-11-25 02:14, cause not found), which is worse than the 60 s
   resend; Celery's own bookkeeping is kept until that is understood.
2. It learns of a child's exit when the child's sentinel pipe closes, but the kernel closes a dying
   process's files a moment before the process can be reaped; when the pool looked in between (5 of 7
   times) `waitpid` said "still running", no process was started, and the next look was the pool's
   periodic check, up to 5 s later: the 1-5 s click-to-running outliers. Here the pool looks again every
   10 ms until the child has been reaped (and its replacement forked): it only calls the pool's own
   `maintain_pool` sooner.

Selected by CELERY_WORKER_POOL; `-P prefork` on the command line selects it too (Celery then takes the
configured pool)."""

from __future__ import annotations

from celery.concurrency import asynpool, prefork

RECHECK_S = 0.01
RECHECKS = 500  # 5 s: after that the pool's own periodic check (every 5 s) takes over


class AsynPool(asynpool.AsynPool):
    def _event_process_exit(self, hub, proc) -> None:
        super()._event_process_exit(hub, proc)  # reaps the child and forks its replacement, if it can already
        self._recheck_exit(hub, proc, RECHECKS)

    def _recheck_exit(self, hub, proc, left: int) -> None:
        if proc in self._pool and left > 0:  # not reaped yet: look again shortly
            hub.call_later(RECHECK_S, self._reap_again, hub, proc, left - 1)

    def _reap_again(self, hub, proc, left: int) -> None:
        self.maintain_pool()
        self._recheck_exit(hub, proc, left)


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
