"""Runs are trained in a process forked for each (webapp/experiments/fresh_process.py): the result comes back,
a death is reported with its cause, and the process never outlives the pool child that forked it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from webapp.experiments.fresh_process import ProcessDied, call_in_fresh_process


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
    with pytest.raises(ProcessDied, match="killed by SIGKILL .*out of memory"):
        call_in_fresh_process(kill_myself)


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
