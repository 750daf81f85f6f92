"""`make run`'s supervisor (scripts/run_dev.py): it survives failing output, stops on Ctrl-C without tracebacks,
and keeps Celery's root warning off a developer's screen."""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run_dev.py"

spec = importlib.util.spec_from_file_location("run_dev", SCRIPT)
run_dev = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_dev)


class DiskFull(io.RawIOBase):
    """A stream whose writes fail with ENOSPC until `full` is set to False."""

    def __init__(self):
        self.full, self.written = True, b""

    def writable(self):
        return True

    def write(self, data):
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written += bytes(data)
        return len(data)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_failing_output_is_dropped_said_once_on_stderr_and_picked_up_again():
    stream, errors, clock = DiskFull(), io.StringIO(), Clock()
    out = run_dev.Output(stream, errors, retry_s=10, clock=clock)
    for i in range(5):
        out.say(f"line {i}", "web")  # never raises
    assert errors.getvalue().count("\n") == 1 and "No space left on device" in errors.getvalue()
    assert "ptlab keeps running" in errors.getvalue()
    stream.full = False
    out.say("not yet: retried 10 s after the failure", "web")
    assert stream.written == b""
    clock.now = 10
    out.say("back", "web")
    assert stream.written.decode().splitlines() == ["run   | (6 lines of output dropped: writing failed)",
                                                    "web   | back"]
    out.say("and on", "web")
    assert stream.written.decode().splitlines()[-1] == "web   | and on"
    assert errors.getvalue().count("\n") == 1


def test_a_closed_pipe_is_survived_too():
    read, write = os.pipe()
    os.close(read)
    stream = open(write, "wb", buffering=0)
    errors = io.StringIO()
    out = run_dev.Output(stream, errors)
    out.say("nobody reads this")  # EPIPE (Python ignores SIGPIPE)
    stream.close()
    out.say("nor this")  # ValueError: a closed file
    assert "Broken pipe" in errors.getvalue() and errors.getvalue().count("\n") == 1


def test_the_supervisor_copies_a_childs_output_to_a_full_disk_and_goes_on(monkeypatch):
    """The real copying path: a child's lines read from its pipe and written to /dev/full (ENOSPC)."""
    errors = io.StringIO()
    out = run_dev.Output(open("/dev/full", "wb", buffering=0), errors)
    monkeypatch.setattr(run_dev, "OUTPUT", out)
    sup = run_dev.Supervisor()
    child = sup.start("web", [sys.executable, "-c", "import time\nfor i in range(10**6):\n"
                             "    print('x' * 100, flush=True); time.sleep(0.001)"], dict(os.environ))
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            sup.pump(0.1)  # a ChildDied or an OSError would fail the test
        assert child.proc.poll() is None and out.dropped > 100
        assert errors.getvalue().count("\n") == 1 and "No space left on device" in errors.getvalue()
    finally:
        sup.stop(5)
    assert child.proc.poll() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PTLAB_", "DJANGO_", "DATABASE_URL", "CELERY_", "PORT", "REDIS_PORT"))}
    env.update(PORT=str(_free_port()), REDIS_PORT=str(_free_port()), PTLAB_SKIP_DEMO="1",
               PTLAB_VAR_DIR=str(tmp_path / "var"), PTLAB_PRELOAD_TRAINING="0", OMP_NUM_THREADS="1",
               PTLAB_STOP_GRACE="20")
    return env


def test_ctrl_c_while_preparing_stops_without_a_traceback(tmp_path):
    """Ctrl-C in a terminal signals its whole foreground process group: before, the migration (run in that group)
    and the supervisor both printed a KeyboardInterrupt traceback."""
    pid, fd = pty.fork()
    if pid == 0:  # a session of its own, with the pseudo-terminal as its controlling terminal
        try:
            os.execve(sys.executable, [sys.executable, str(SCRIPT)], _env(tmp_path))
        finally:
            os._exit(127)
    output = b""

    def read_until(predicate, timeout: float) -> bool:
        nonlocal output
        deadline = time.monotonic() + timeout
        while not predicate(output) and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's other side has closed
                    return predicate(output)
                if not data:
                    break
                output += data
        return predicate(output)

    try:
        assert read_until(lambda o: b"migrating the database" in o, 60), output
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to its foreground process group
        read_until(lambda o: False, 30 if read_until(lambda o: b"stopped" in o, 30) else 0)
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    text = output.decode(errors="replace")
    assert "SIGINT: stopping" in text and "stopped" in text, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert os.waitstatus_to_exitcode(status) == 0, text


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def test_make_run_outlives_its_output_and_the_worker_is_not_warned_about_root(tmp_path):
    """The whole stack (migration, Redis, worker, web server) with stdout on a pipe that its reader closes once
    the worker is ready (a `make run | tee log` whose tee died): it stays up, says so once on stderr, and stops
    cleanly. Celery's warning about running as root (as on a developer's container) is not in the output."""
    env = _env(tmp_path)
    url = f"http://127.0.0.1:{env['PORT']}/accounts/login/"
    proc = subprocess.Popen([sys.executable, str(SCRIPT)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    output = b""
    try:
        deadline = time.monotonic() + 120
        while not (b"ptlab is running" in output and b" ready." in output):
            assert proc.poll() is None and time.monotonic() < deadline, (output.decode(), proc.stderr.read())
            if select.select([proc.stdout], [], [], 0.5)[0]:
                output += os.read(proc.stdout.fileno(), 65536)
        proc.stdout.close()  # its next line fails with EPIPE
        assert _answers(url)  # the web server logs the request: a write to the closed pipe
        time.sleep(1)
        assert proc.poll() is None and _answers(url)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = output.decode(errors="replace")
    if os.geteuid() == 0:
        assert "superuser privileges" not in text, text
    assert proc.returncode == 0, err
    assert err.count("cannot write the output") == 1 and "Broken pipe" in err, err
    assert "Traceback" not in err, err


@pytest.mark.skipif(os.geteuid() != 0, reason="Celery warns only when root runs it")
def test_the_worker_is_not_warned_about_root_under_make_run():
    code = "from celery.platforms import check_privileges\ncheck_privileges(['json'])"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "C_FORCE_ROOT")}
    warned = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "superuser privileges" in warned.stderr  # what a deployment running workers as root still sees
    quiet = subprocess.run([sys.executable, "-c", code], env=dict(env, PYTHONWARNINGS=run_dev.ROOT_WARNING),
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
