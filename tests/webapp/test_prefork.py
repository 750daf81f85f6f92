"""The worker's pool (webapp/workers/prefork.py) replaces an exited child without waiting for Celery's
periodic pool check; the worker's main process freezes what it preloads out of the garbage collector."""

from __future__ import annotations

import gc

from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from django.conf import settings

from webapp.workers import prefork as ptlab_pool
from webapp.workers.worker import preload_training


class FakeHub:
    def __init__(self):
        self.later = []

    def call_later(self, delay, callback, *args):
        self.later.append((delay, callback, args))

    def run_timers(self) -> int:
        ran = 0
        while self.later:
            _, callback, args = self.later.pop(0)
            callback(*args)
            ran += 1
        return ran


def pool_whose_child_is_reaped_after(looks: int):
    """An AsynPool (not started) with one exited child that `waitpid` reports gone only at the `looks`-th
    maintain_pool, like a child whose sentinel closed before the kernel let it be reaped."""
    p = ptlab_pool.AsynPool.__new__(ptlab_pool.AsynPool)
    child = object()
    p._pool = [child]
    p.looks = 0

    def maintain_pool():
        p.looks += 1
        if p.looks >= looks:
            p._pool.remove(child)  # reaped, and a replacement forked (not modelled here)

    p.maintain_pool = maintain_pool
    p._untrack_child_process = lambda proc, hub: None
    return p, child


def test_the_settings_select_the_ptlab_prefork_pool():
    cls = get_implementation(settings.CELERY_WORKER_POOL)
    assert cls is ptlab_pool.TaskPool and issubclass(cls, PreforkPool)  # revoke(terminate=True) needs prefork
    assert cls.Pool is ptlab_pool.AsynPool
    # The child is never recycled (a job could be lost as it exits); runs get a process each all the same.
    assert settings.CELERY_WORKER_MAX_TASKS_PER_CHILD is None


def test_an_exited_child_not_yet_reapable_is_looked_at_again_until_reaped():
    p, child = pool_whose_child_is_reaped_after(looks=4)
    hub = FakeHub()
    p._event_process_exit(hub, child)  # the sentinel fired: first look, child still there
    assert p.looks == 1 and hub.later and hub.later[0][0] == ptlab_pool.RECHECK_S
    assert hub.run_timers() == 3  # three more looks, 10 ms apart, then no more timers
    assert p.looks == 4 and child not in p._pool


def test_a_child_reaped_at_once_schedules_nothing():
    p, child = pool_whose_child_is_reaped_after(looks=1)
    hub = FakeHub()
    p._event_process_exit(hub, child)
    assert p.looks == 1 and not hub.later


def test_the_looks_stop_after_a_while_and_the_periodic_check_takes_over():
    p, child = pool_whose_child_is_reaped_after(looks=10**9)
    hub = FakeHub()
    p._event_process_exit(hub, child)
    assert hub.run_timers() == ptlab_pool.RECHECKS
    assert child in p._pool


def test_preload_freezes_the_preloaded_objects(settings):
    settings.PTLAB_PRELOAD_TRAINING = False  # torch is not needed to see the freeze
    try:
        preload_training()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
