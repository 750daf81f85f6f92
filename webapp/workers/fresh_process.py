"""Call a function in a fresh process forked from this one, and wait for it to end.

A Celery worker trains each run in a process of its own, so that everything the run allocated (host and
GPU memory, CUDA state, threads) goes back to the system when it ends. Those processes are forked here by
the pool's long-lived child, which has torch, transformers and TRL imported already (the worker's main
process preloads them). Letting Celery's pool recycle its child after each run (max_tasks_per_child=1)
instead lost, about once in 150 hand-overs, a job that arrived as the previous run ended: the pool wrote it
into the exiting child's pipe (issue 3; bench/RESULTS.md)."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable

from django.db import connections

PR_SET_PDEATHSIG = 1  # linux/prctl.h


# Signals whose handlers in the pool's child are Celery's (billiard's shutdown cleanup, the soft time limit):
# in the run's process they must do what they do to any process, not run Celery's code there.
RESET_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
# A run's process ended by one of these was stopped (a worker's shutdown, Ctrl-C, an operator), not broken.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT})


class ProcessDied(RuntimeError):
    """The fresh process ended without returning: killed by a signal (`signal`), or exited with an uncaught
    error (`signal` None)."""

    def __init__(self, status: int, why: str = ""):
        self.signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        self.killed_by_watch = bool(why)
        super().__init__(why or describe_status(status))

    @property
    def stopped(self) -> bool:
        return self.signal in STOP_SIGNALS


def call_in_fresh_process(func: Callable[..., object], *args, watch: Callable[[], str | None] | None = None,
                          watch_every: float = 1.0) -> str:
    """`str(func(*args))`, computed in a forked process. Raises ProcessDied if that process did not
    return normally. The process is killed with its parent: it never trains on, unsupervised, after the
    pool's child was killed (a forced cancel, a cold shutdown). `watch`, called every `watch_every` seconds
    while it runs, returns why the process must be killed now (it hangs, its run went elsewhere), or None."""
    connections.close_all()  # a forked process must never share the parent's database connections
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write the parent's buffered output again
    read_end, write_end = os.pipe()
    parent = os.getpid()
    # No signal handler may run between the fork and the child's reset of the handlers (it would run
    # Celery's code in the child) or before the parent's wait is set up: hold them back for that moment.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, RESET_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        os.close(read_end)
        os.close(write_end)
        raise
    if pid == 0:
        try:
            _child(func, args, parent, read_end, write_end, held)
        finally:
            os._exit(1)  # whatever happens, never return into the caller's (Celery's) code
    os.close(write_end)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        status, why = _wait(pid, watch, watch_every)
    except BaseException:  # the pool child is being stopped (a soft time limit, a signal handler): so is the run
        _kill(pid)
        os.close(read_end)
        raise
    result = _read_available(read_end)
    if not why and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return result
    raise ProcessDied(status, why)


def _wait(pid: int, watch, every: float) -> tuple[int, str]:
    """Wait for the process to end; kill it (SIGKILL also ends a stopped process) when `watch` says so.
    Returns its wait status and the watch's reason ("" when it ended by itself)."""
    if watch is None:
        return os.waitpid(pid, 0)[1], ""
    try:
        ended = os.pidfd_open(pid)  # readable once the process has ended: no polling delay at its end
    except (AttributeError, OSError):
        ended = None
    try:
        next_watch = time.monotonic() + every
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, ""
            if time.monotonic() >= next_watch:
                next_watch = time.monotonic() + every
                try:
                    why = watch()
                except Exception:  # a database hiccup: look again next time
                    why = None
                if why:
                    os.kill(pid, signal.SIGKILL)
                    return os.waitpid(pid, 0)[1], why
            timeout = max(0.0, next_watch - time.monotonic())
            if ended is not None:
                select.select([ended], [], [], timeout)
            else:
                time.sleep(min(timeout, 0.05))
    finally:
        if ended is not None:
            os.close(ended)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if sig == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def _read_available(fd: int) -> str:
    """What the (exited) child wrote. Not a read to the end of the pipe: a process the run forked (a data
    loader worker) may still hold its write end, and would make the pool's child wait for it."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _child(func, args, parent: int, read_end: int, write_end: int, held) -> None:
    for sig in RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    code = 1
    try:
        os.close(read_end)
        _die_with(parent)
        result = str(func(*args))
        os.write(write_end, result.encode())  # short (a state name): fits the pipe's buffer, never blocks
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            connections.close_all()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
