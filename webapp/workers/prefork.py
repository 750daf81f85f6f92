"""The worker's process pool: Celery's prefork pool, replacing a lost child at once.

The pool's child lives on between runs (each run is trained in a process the child forks for it:
webapp/workers/fresh_process.py); it ends only when killed: a forced cancel (revoke with SIGKILL), the
OOM killer. Celery learns of a child's exit when the child's sentinel pipe closes, then asks `waitpid`; but
the kernel closes a dying process's files a moment before the process can be reaped, and when the pool
looked in between (5 of 7 times, measured with bench/web_speed.py when each run had a child of its own;
bench/RESULTS.md) `waitpid` said "still running", no process was started, and the next look was the pool's
periodic check, up to 5 s later. Here the pool looks again every 10 ms until the child has been reaped (and
its replacement forked): it only calls the pool's own `maintain_pool` sooner. (The run's process holds an
inherited copy of that sentinel pipe, so a killed child's exit shows once the run's process has died too:
at once, as the kernel kills it with its parent.)

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
