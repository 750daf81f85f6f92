"""Fault injection against the real execution layer (issue 12): real Celery worker processes, a real Redis
broker, the test database (SQLite, or PostgreSQL via DATABASE_URL), the tiny model.

Each scenario injects one fault (a run's process killed, stopped and resumed, hung; the database's
connections cut; the broker down at creation; a reaper whose clock runs ahead; a requeue behind queued
runs) and asserts what attempt fencing promises: every `(run, step, name)` point and every sample exactly
once, the run `succeeded`, its final model unchanged by any earlier attempt, and the worker taking the
next run. The services and helpers are test_integration's. No test waits on a log line: each polls the
database or the processes' state, with a deadline."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from test_integration import (  # noqa: F401  (fixtures)
    WAIT,
    WorkerProcess,
    _free_port,
    artifact_root,
    assert_no_duplicate_points,
    broker,
    browser,
    children,
    enqueued,
    finished,
    queue,
    redis_url,
    start_sft,
    steps_of,
    wait_for,
)

from tests.celery_broker import celery_app_on
from webapp.experiments.models import Metric, Run, Sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
State = Run.State
EVAL_PROMPTS, EVAL_SAMPLES = 2, 1  # test_integration.SMALL's
FAST_WATCH = {"PTLAB_WATCH_SECONDS": "0.5"}  # the pool child looks at its run's process twice a second


# --- helpers --------------------------------------------------------------------------------------

@contextmanager
def own_workers(broker_url: str, tmp_path: Path, *names: str, env: dict | None = None, on: str | None = None):
    """Workers with settings `env` on a queue of their own (or on `on`), ready; stopped at the end."""
    q = on or f"fault-{names[0]}-{uuid.uuid4().hex[:6]}"
    workers = []
    try:
        for name in names:
            workers.append(WorkerProcess(name, q, broker_url, tmp_path, env=env))
        for w in workers:
            w.wait_ready()
        yield q, workers
    finally:
        for w in workers:
            w.stop()


def run_process(worker: WorkerProcess) -> tuple[int, int]:
    """(the worker's pool child, the process it forked for the run it trains)."""
    [pool_child] = children(worker.proc.pid)
    procs = wait_for(lambda: children(pool_child), 60, "the run's process", worker)
    assert len(procs) == 1, procs
    return pool_child, procs[0]


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of `pid` (R, S, T stopped, Z exited, unreaped), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def someone_holds_a_transaction() -> bool:
    """A process (one we stopped) holds a write transaction open on the test database."""
    if connection.vendor == "sqlite":
        probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=1.0)
        try:
            probe.execute("BEGIN IMMEDIATE")  # waits out others' short writes; fails on a lock held for good
            probe.rollback()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    time.sleep(0.5)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%%' "
                       "AND now() - state_change > interval '0.4 seconds'")
        return cursor.fetchone()[0] > 0


def freeze(pid: int) -> None:
    """SIGSTOP `pid` at a moment it holds no database transaction (a process stopped inside one would hold
    the run's row lock, SQLite's write lock, for as long as it stays stopped: a different fault)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(pid) in ("T", None), 10, f"process {pid} to stop")
        if not someone_holds_a_transaction():
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail(f"could not stop process {pid} outside a database transaction")


def eval_steps(steps: int, every: int) -> list[int]:
    return sorted(set(range(0, steps, every)) | {steps})


def assert_complete(run: Run, steps: int, every: int) -> None:
    """Every point of the run's series and every sample exactly once: none doubled, none missing."""
    assert_no_duplicate_points(run)
    samples = Sample.objects.filter(run=run)
    doubled = samples.values("step", "prompt_id", "index").annotate(n=Count("id")).filter(n__gt=1)
    assert not doubled.exists(), list(doubled)
    evals = eval_steps(steps, every)
    assert steps_of(run, "train/loss") == list(range(1, steps + 1))
    for name in ("eval/reward", "eval/kl"):
        assert steps_of(run, name) == evals, name
    for name in set(Metric.objects.filter(run=run).values_list("name", flat=True)):
        assert set(steps_of(run, name)) <= set(range(steps + 1)), name  # nothing past the end
    assert sorted(set(samples.values_list("step", flat=True))) == evals
    assert samples.count() == len(evals) * EVAL_PROMPTS * EVAL_SAMPLES


def points(run: Run) -> Counter:
    """How many rows each (name, step) point and each sample has: a later write of any kind changes it."""
    rows = Counter(Metric.objects.filter(run=run).values_list("name", "step"))
    rows.update(("sample", s) for s in Sample.objects.filter(run=run).values_list("step", flat=True))
    return rows


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime) of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_final_model(run: Run) -> dict:
    """The final model is complete and loads; no attempt left a model or checkpoint in its private folder.
    Returns its snapshot, to show later that nothing replaced it."""
    from safetensors.torch import load_file

    model = Path(run.out_dir) / "model"
    assert (model / "config.json").is_file()
    assert load_file(model / "model.safetensors")  # complete: the header and every tensor read back
    leftovers = [p for p in (Path(run.out_dir) / ".attempts").glob("*/*") if any(p.rglob("*.safetensors"))]
    assert not leftovers, leftovers
    return snapshot(model)


def next_run_is_taken(b, q: str, worker: WorkerProcess, *others: WorkerProcess) -> None:
    """The worker takes and trains the next run sent to its queue."""
    exp, run = start_sft(b, q, f"next after {worker.name}", steps=2, eval_every=2)
    wait_for(lambda: finished(exp), WAIT, "the next run", worker, *others)
    run.refresh_from_db()
    assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
    assert run.claimed_by.startswith(f"{worker.name}@")


def reached(run: Run, step: int, checkpoint: int | None = None):
    """A condition: the run logged train/loss up to `step` (and published checkpoint-`checkpoint`)."""
    def check() -> bool:
        if checkpoint and not (Path(run.out_dir) / "checkpoints" / f"checkpoint-{checkpoint}" / "trainer_state.json").is_file():
            return False
        return Metric.objects.filter(run=run, name="train/loss", step__gte=step).exists()
    return check


# --- the scenarios --------------------------------------------------------------------------------

def test_a_run_process_killed_before_its_first_checkpoint_starts_again_without_doubled_points(browser, broker, tmp_path):  # noqa: F811
    """SIGKILL of the run's process (the OOM killer) after its step-0 evaluation and a few steps, before its
    first checkpoint: the next attempt starts from step 0, and what the first one logged goes."""
    steps, every = 30, 15  # the first checkpoint at step 15
    with own_workers(broker, tmp_path, "sigkill") as (q, [own]):
        exp, run = start_sft(browser, q, "SIGKILL before a checkpoint", steps, every)
        wait_for(reached(run, 2), WAIT, "a few steps logged", own)
        pool_child, proc = run_process(own)
        os.kill(proc, signal.SIGKILL)
        killed_at = Metric.objects.filter(run=run, name="train/loss").count()
        published = list((Path(run.out_dir) / "checkpoints").glob("checkpoint-*"))
        assert not published, f"killed too late: {published} published"
        assert killed_at < every
        wait_for(lambda: finished(exp), WAIT, "the run to start again and finish", own)
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
        assert_complete(run, steps, every)
        assert run.attempts == 2 and "the run's process killed by SIGKILL" in run.log
        assert "starting from step 0" in run.log.split("attempt 2 on")[1]
        model = assert_final_model(run)
        next_run_is_taken(browser, q, own)
        assert children(own.proc.pid) == [pool_child]
    assert snapshot(Path(run.out_dir) / "model") == model


def test_a_stopped_attempt_resumed_after_its_run_finished_elsewhere_writes_nothing(browser, broker, tmp_path):  # noqa: F811
    """SIGSTOP of the run's process (and of the pool child that watches it, so that nothing kills it
    early): the run is reaped and requeued, and another worker resumes and finishes it. Then SIGCONT: the
    old attempt writes no row, publishes no checkpoint, does not replace the final model, and stops."""
    steps, every = 24, 4
    with own_workers(broker, tmp_path, "left", "right", env=FAST_WATCH) as (q, pair):
        exp, run = start_sft(browser, q, "SIGSTOP across a requeue", steps, every)
        wait_for(reached(run, 6, checkpoint=4), WAIT, "a checkpoint and steps past it", *pair)
        run.refresh_from_db()
        victim = next(w for w in pair if run.claimed_by.startswith(f"{w.name}@"))
        other = next(w for w in pair if w is not victim)
        pool_child, zombie = run_process(victim)
        freeze(zombie)
        os.kill(pool_child, signal.SIGSTOP)
        stopped_at = Metric.objects.filter(run=run, name="train/loss").count()
        wait_for(lambda: finished(exp), WAIT, "the run to be reaped and finished by the other worker", *pair)
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
        assert run.attempts == 2 and run.claimed_by.startswith(f"{other.name}@")
        assert stopped_at < steps and "sent no heartbeat" in run.log
        assert_complete(run, steps, every)
        rows, model = points(run), assert_final_model(run)
        checkpoints = snapshot(Path(run.out_dir) / "checkpoints")

        os.kill(zombie, signal.SIGCONT)  # it trains on from where it stopped, for a moment
        wait_for(lambda: proc_state(zombie) in ("Z", None), WAIT, "the old attempt to give up by itself", *pair)
        os.kill(pool_child, signal.SIGCONT)
        wait_for(lambda: proc_state(zombie) is None, 60, "the pool child to reap it", *pair)
        assert points(run) == rows
        assert snapshot(Path(run.out_dir) / "model") == model
        assert snapshot(Path(run.out_dir) / "checkpoints") == checkpoints
        assert Run.objects.get(pk=run.pk).state == State.SUCCEEDED

        other.stop()  # the stopped worker, not the one that finished the run, must take the next one
        next_run_is_taken(browser, q, victim)
    assert_complete(Run.objects.get(pk=run.pk), steps, every)


def test_the_worker_kills_its_stopped_run_process_once_the_run_is_requeued(browser, broker, tmp_path):  # noqa: F811
    """SIGSTOP of the run's process only: once the reaper requeued the run, the worker's pool child kills
    that process (it must never resume) and goes on; the other worker finishes the run."""
    steps, every = 16, 4
    with own_workers(broker, tmp_path, "north", "south", env=FAST_WATCH) as (q, pair):
        exp, run = start_sft(browser, q, "requeued: killed", steps, every)
        wait_for(reached(run, 5, checkpoint=4), WAIT, "a checkpoint and a step past it", *pair)
        run.refresh_from_db()
        victim = next(w for w in pair if run.claimed_by.startswith(f"{w.name}@"))
        pool_child, stopped = run_process(victim)
        freeze(stopped)
        wait_for(lambda: proc_state(stopped) is None, WAIT, "the stopped process to be killed", *pair)
        taken = Run.objects.get(pk=run.pk)
        assert taken.state == State.QUEUED or taken.attempts == 2  # killed once its run was taken away, not before
        wait_for(lambda: finished(exp), WAIT, "the run to finish on the other worker", *pair)
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
        assert run.attempts == 2 and not run.claimed_by.startswith(f"{victim.name}@")
        assert_complete(run, steps, every)
        assert children(victim.proc.pid) == [pool_child]  # the same pool child went on
        assert_final_model(run)


def test_a_hung_run_process_is_killed_by_its_worker_and_resumed(browser, broker, tmp_path):  # noqa: F811
    """A run's process that makes no progress (stopped; its heartbeat stops with it) is killed by its own
    worker after PTLAB_HUNG_AFTER_SECONDS, long before the reaper would act, and the run resumes."""
    steps, every = 16, 4
    env = {**FAST_WATCH, "PTLAB_HUNG_AFTER_SECONDS": "6", "PTLAB_REAP_AFTER_SECONDS": "600"}
    with own_workers(broker, tmp_path, "hung", env=env) as (q, [own]):
        exp, run = start_sft(browser, q, "hung", steps, every)
        wait_for(reached(run, 5, checkpoint=4), WAIT, "a checkpoint and a step past it", own)
        pool_child, hung = run_process(own)
        freeze(hung)
        t0 = time.monotonic()
        wait_for(lambda: proc_state(hung) is None, WAIT, "the hung process to be killed", own)
        assert time.monotonic() - t0 < 120  # not the reaper's 600 s
        wait_for(lambda: finished(exp), WAIT, "the run to resume and finish", own)
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
        assert run.attempts == 2 and "made no progress" in run.log and "resuming from the checkpoint" in run.log
        assert_complete(run, steps, every)
        model = assert_final_model(run)
        next_run_is_taken(browser, q, own)
        assert children(own.proc.pid) == [pool_child]
    assert snapshot(Path(run.out_dir) / "model") == model


def test_the_database_restarted_mid_run(browser, broker, tmp_path):  # noqa: F811
    """PostgreSQL only. By default every connection to the test database but this one is terminated (what a
    restart does to them, without disturbing other databases on the server); with
    PTLAB_FAULTS_RESTART_POSTGRES=1 the server itself is restarted (pg_ctlcluster, needs the rights)."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://...): SQLite has no server to restart")
    steps, every = 24, 4
    with own_workers(broker, tmp_path, "pg") as (q, [own]):
        exp, run = start_sft(browser, q, "database restart", steps, every)
        wait_for(reached(run, 6, checkpoint=4), WAIT, "a checkpoint and steps past it", own)
        if os.environ.get("PTLAB_FAULTS_RESTART_POSTGRES") == "1":
            version, cluster = os.environ.get("PTLAB_FAULTS_PG_CLUSTER", "15/main").split("/")
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"], check=True)
            connection.close()
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                assert cursor.fetchone()[0] >= 1
        wait_for(lambda: finished(exp), WAIT, "the run to finish", own)
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
        assert_complete(run, steps, every)
        model = assert_final_model(run)
        next_run_is_taken(browser, q, own)
    assert snapshot(Path(run.out_dir) / "model") == model


def test_experiments_created_with_the_broker_down_are_sent_when_it_is_back(browser, broker, live_server,  # noqa: F811
                                                                           django_user_model, tmp_path):
    """The web side's broker is down: the form and the API still create the experiment (302 / 201, never
    a 500 after saving it), the runs stay queued, and the workers' resend sends them once it is back."""
    from webapp.api.models import ApiToken

    q = f"fault-resend-{uuid.uuid4().hex[:6]}"
    user = django_user_model.objects.get(username="ivy")
    _, token = ApiToken.issue(user, "faults")
    spec = {"name": "via the API, broker down", "task": "arithmetic", "methods": ["sft"], "max_steps": 2,
            "eval_every": 2, "eval_prompts": EVAL_PROMPTS, "eval_samples": EVAL_SAMPLES, "max_new_tokens": 4,
            "queue": q, "hyperparams": {"sft": {"max_steps": 2}}}
    with celery_app_on(f"redis://127.0.0.1:{_free_port()}/0"):  # nothing listens there
        form_exp, _ = start_sft(browser, q, "via the form, broker down", steps=2, eval_every=2)
        request = urllib.request.Request(f"{live_server.url}/api/experiments", data=json.dumps(spec).encode(),
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()[:2000]
        assert status == 201, body
    runs = Run.objects.filter(experiment__queue=q)
    assert runs.count() == 2 and set(runs.values_list("state", flat=True)) == {State.QUEUED}
    import redis

    assert redis.Redis.from_url(broker).llen(q) == 0  # nothing was sent
    with own_workers(broker, tmp_path, "resend", env={"PTLAB_RESEND_AFTER_SECONDS": "1"}, on=q) as (_, [own]):
        wait_for(lambda: not runs.filter(state__in=Run.ACTIVE_STATES).exists(), WAIT, "both runs to train", own)
        for run in runs:
            assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
            assert run.attempts == 1 and "sent again" in run.log
            assert_complete(run, 2, 2)
        assert form_exp.runs.get().claimed_by.startswith("resend@")
        next_run_is_taken(browser, q, own)


def test_a_reaper_whose_clock_runs_ahead_never_requeues_a_live_run(browser, broker, tmp_path):  # noqa: F811
    """The reaper reads the time from the database: one on a host whose clock is 120 s ahead (this process,
    reaping over and over while a worker trains) requeues nothing."""
    from webapp.workers.recovery import do_reap

    steps, every = 80, 20
    real_now = timezone.now
    with own_workers(broker, tmp_path, "skew") as (q, [own]):
        exp, run = start_sft(browser, q, "reaper ahead", steps, every)
        wait_for(lambda: Run.objects.filter(pk=run.pk, state=State.RUNNING).exists(), WAIT, "the run to start", own)
        deadline, reaped, rounds = time.monotonic() + WAIT, [], 0
        while not finished(exp):
            assert time.monotonic() < deadline, own.tail()
            with mock.patch.object(timezone, "now", lambda: real_now() + timezone.timedelta(seconds=120)):
                reaped += do_reap()
            rounds += 1
            time.sleep(0.2)
        assert not reaped and rounds >= 5  # it reaped while the run trained
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, (run.error, run.traceback, run.log)
        assert run.attempts == 1
        assert_complete(run, steps, every)
        assert_final_model(run)
        next_run_is_taken(browser, q, own)


def test_a_requeued_run_goes_ahead_of_runs_queued_before_it(browser, broker, tmp_path):  # noqa: F811
    """One busy worker; runs A then B queued; then run C requeued (its attempt lost): C is trained first."""
    from webapp.experiments.actions import do_cancel_run, requeue

    with own_workers(broker, tmp_path, "order") as (q, [own]):
        busy_exp, busy = start_sft(browser, q, "busy", steps=100000, eval_every=100000)
        wait_for(lambda: Run.objects.filter(pk=busy.pk, state=State.RUNNING).exists(), WAIT, "the busy run", own)
        runs = {name: start_sft(browser, q, name, steps=2, eval_every=2)[1] for name in "ABC"}
        c = Run.objects.claim(runs["C"].pk, "ghost@nowhere", "ghost-task")  # an attempt elsewhere, then lost
        assert requeue(c, "test: its worker died; requeued")
        do_cancel_run(busy)
        everything = Run.objects.filter(pk__in=[busy.pk] + [r.pk for r in runs.values()])
        wait_for(lambda: not everything.filter(state__in=Run.ACTIVE_STATES).exists(), WAIT, "every run", own)
        started = {name: Run.objects.get(pk=r.pk) for name, r in runs.items()}
        assert all(r.state == State.SUCCEEDED for r in started.values()), [r.error for r in started.values()]
        assert started["C"].started_at < started["A"].started_at < started["B"].started_at
