"""Runs are trained in a process forked for each (webapp/workers/fresh_process.py): the result comes back,
a death is reported with its cause, and the process never outlives the pool child that forked it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from django.db import connection

from webapp.workers.fresh_process import ProcessDied, call_in_fresh_process


def pid_and(value) -> str:
    return f"{os.getpid()} {value}"


def kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fail() -> None:
    raise ValueError("boom")


def test_the_function_runs_in_another_process_and_its_result_comes_back():
    pid, value = call_in_fresh_process(pid_and, 42).split()
    assert value == "42" and int(pid) != os.getpid()


def test_a_process_killed_by_a_signal_is_reported_with_the_signal():
    with pytest.raises(ProcessDied, match="killed by SIGKILL .*out of memory") as died:
        call_in_fresh_process(kill_myself)
    assert not died.value.stopped  # a crash, not a stop


def terminate_myself() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)


def test_sigterm_stops_the_process_even_where_the_parent_handles_it():
    """The pool's child has Celery's SIGTERM handler (it raises SystemExit): the run's process must not
    run it (a traceback mid-training, "exited with code 1"), but die of the signal, as a stop."""

    def celery_like(signum, frame):
        raise SystemExit(1)

    before = signal.signal(signal.SIGTERM, celery_like)
    try:
        with pytest.raises(ProcessDied, match="killed by SIGTERM") as died:
            call_in_fresh_process(terminate_myself)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert died.value.stopped


def fork_a_lingering_helper(pid_file: str) -> str:
    helper = os.fork()
    if helper == 0:  # like a data loader worker: it inherits every descriptor, the result pipe's too
        time.sleep(60)
        os._exit(0)
    with open(pid_file, "w") as f:
        f.write(str(helper))
    return "done"


def test_a_process_the_run_forked_does_not_hold_its_result_back(tmp_path):
    pid_file = tmp_path / "helper"
    outcome = []
    caller = threading.Thread(target=lambda: outcome.append(call_in_fresh_process(fork_a_lingering_helper,
                                                                                  str(pid_file))))
    caller.start()
    caller.join(30)  # a guard against a hang, not a timing goal: the helper lives 60 s
    try:
        assert not caller.is_alive() and outcome == ["done"]
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def connection_is_closed() -> bool:
    return connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_the_process_never_shares_the_database_connection_of_its_parent():
    connection.ensure_connection()  # the pool's child has one open after a run ended
    assert call_in_fresh_process(connection_is_closed) == "True"


def test_an_uncaught_error_is_reported_as_an_exit_code(capfd):
    with pytest.raises(ProcessDied, match="exited with code 1"):
        call_in_fresh_process(fail)
    assert "ValueError: boom" in capfd.readouterr().err  # its traceback is in the worker's log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (dead, not yet reaped by init) counts as gone
        return f.read().split(") ", 1)[1][0] != "Z"


def test_the_process_dies_with_the_process_that_forked_it(tmp_path):
    """A forced cancel SIGKILLs the pool's child; the run's process must not go on training unsupervised."""
    pid_file = tmp_path / "pid"
    middle = os.fork()
    if middle == 0:  # stands in for the pool's child
        try:
            call_in_fresh_process(_write_pid_and_sleep, str(pid_file))
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the fresh process never started"
        time.sleep(0.01)
    run_pid = int(pid_file.read_text())
    assert _alive(run_pid)
    os.kill(middle, signal.SIGKILL)
    os.waitpid(middle, 0)
    while _alive(run_pid):
        assert time.monotonic() < deadline, "the run's process outlived its parent"
        time.sleep(0.01)


def _write_pid_and_sleep(path: str) -> None:
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)
