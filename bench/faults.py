"""Faults, measured (issue 12): each scenario of tests/webapp/test_faults.py repeated against real Celery
workers, a real Redis and a fresh database, counting what fencing must keep at zero and timing recovery.

    OMP_NUM_THREADS=1 .venv/bin/python bench/faults.py [--repeats 5] [--scenarios sigkill,sigstop,...]
        [--broker redis://127.0.0.1:6379/13] [--database postgres://postgres@127.0.0.1:5432/ptlab_bench_faults]

Without --database: a fresh SQLite file. With a PostgreSQL URL the database is dropped and created again
(never name a database you need). Per scenario and repetition: the run lost (not succeeded in the end),
trained twice at once (polls at which two workers had a live, not stopped, process for it), duplicate rows
(metric points and samples beyond one), missing points (train/loss at every step, eval/reward and eval/kl
at every evaluation, the samples), writes by an attempt after its run finished elsewhere (sigstop), and the
seconds from the fault to the run running again and to its end.

Scenarios:
  sigkill   SIGKILL of the run's process before its first checkpoint (30 steps, checkpoint at 15)
  sigstop   SIGSTOP of the run's process and its pool child; reaped (10 s), finished by the other worker;
            then SIGCONT (24 steps, checkpoints every 4)
  hung      SIGSTOP of the run's process; its own worker kills it after PTLAB_HUNG_AFTER_SECONDS=6
  dbcut     PostgreSQL only: every connection of the workers terminated mid-run (pg_terminate_backend)
  broker    the run created while the broker is down; sent by the worker's resend (1 s) once it is back
  skew      a reaper 120 s ahead reaping every 0.2 s while the run trains (80 steps)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HEARTBEAT_S, REAP_AFTER_S = 1, 10  # as tests/webapp/test_integration.py
WAIT = 300
SCENARIOS = ("sigkill", "sigstop", "hung", "dbcut", "broker", "skew")


# --- processes ------------------------------------------------------------------------------------

class Worker:
    def __init__(self, name: str, queue: str, env: dict, log_dir: Path):
        self.name = name
        self.log = open(log_dir / f"worker-{name}.log", "w")
        cmd = [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queue, "-c", "1",
               "--prefetch-multiplier", "1", "-P", "prefork", "-n", f"{name}@%h", "-l", "INFO",
               "--without-mingle", "--without-gossip"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def pool_child(self) -> int | None:
        kids = children(self.proc.pid)
        return kids[0] if kids else None

    def run_processes(self) -> list[int]:
        pool = self.pool_child()
        return children(pool) if pool else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def wait_for(condition, timeout: float = WAIT, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- database -------------------------------------------------------------------------------------

def prepare_database(url: str | None, folder: Path) -> str:
    if not url:
        return f"sqlite:///{folder / 'db.sqlite3'}"
    import psycopg

    name = url.rsplit("/", 1)[1]
    assert name.startswith("ptlab_bench"), "the database is dropped: name one starting with ptlab_bench"
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url


def someone_holds_a_transaction() -> bool:
    from django.db import connection

    if connection.vendor == "sqlite":
        probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=1.0)
        try:
            probe.execute("BEGIN IMMEDIATE")
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
    """SIGSTOP outside a database transaction (see tests/webapp/test_faults.py)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(pid) in ("T", None), 10, "stopped")
        if not someone_holds_a_transaction():
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    raise RuntimeError("could not stop the process outside a transaction")


# --- one repetition -------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, folder: Path):
        from django.contrib.auth.models import User

        self.args, self.folder = args, folder
        self.owner, _ = User.objects.get_or_create(username="bench")
        self.worker_env = {"DATABASE_URL": os.environ["DATABASE_URL"], "CELERY_BROKER_URL": args.broker,
                           "DJANGO_SETTINGS_MODULE": "webapp.settings", "PTLAB_ARTIFACT_ROOT": str(folder / "artifacts"),
                           "PTLAB_HEARTBEAT_SECONDS": str(HEARTBEAT_S), "PTLAB_REAP_AFTER_SECONDS": str(REAP_AFTER_S),
                           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}

    def workers(self, scenario: str, names: list[str], env: dict | None = None, queue: str | None = None):
        from webapp.experiments.models import Worker as WorkerRow

        queue = queue or f"bench-{scenario}-{uuid.uuid4().hex[:6]}"
        ws = [Worker(f"{scenario}{n}", queue, {**self.worker_env, **(env or {})}, self.folder) for n in names]
        for w in ws:
            wait_for(lambda w=w: WorkerRow.objects.filter(hostname__startswith=f"{w.name}@").exists(), 120,
                     f"worker {w.name}")
        return queue, ws

    def create(self, queue: str, steps: int, every: int):
        from webapp.experiments.actions import do_create_experiment
        from webapp.experiments.models import Experiment

        exp = do_create_experiment(Experiment(
            owner=self.owner, name=f"faults {uuid.uuid4().hex[:6]}", base_model="tiny", task="arithmetic",
            methods=["sft"], seeds=1, max_steps=steps, eval_every=every, eval_prompts=2, eval_samples=1,
            max_new_tokens=4, rl_from_sft=False, queue=queue, hyperparams={}))
        return exp.runs.get()


class Follow:
    """Polls the run and the workers' processes until the run ends: when it runs again (attempts past
    `attempts`), when it ends, and how often two workers had a live process for it at once."""

    def __init__(self, run, workers: list[Worker], attempts: int):
        self.run, self.workers, self.attempts = run, workers, attempts
        self.t0 = time.monotonic()
        self.running_again = self.done = None
        self.twice = 0

    def poll(self) -> bool:
        from webapp.experiments.models import Run

        row = Run.objects.filter(pk=self.run.pk).values("state", "attempts").first()
        now = time.monotonic() - self.t0
        if self.running_again is None and row["attempts"] > self.attempts and row["state"] != "queued":
            self.running_again = now
        live = sum(1 for w in self.workers if any(proc_state(p) not in ("T", "Z", None) for p in w.run_processes()))
        self.twice += live > 1
        if row["state"] in ("succeeded", "failed", "cancelled"):
            self.done = now
            return True
        return False

    def until_done(self, timeout: float = WAIT, also=None) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > deadline:
                return
            if also:
                also()
            time.sleep(0.2)


def points(run) -> Counter:
    from webapp.experiments.models import Metric, Sample

    rows = Counter(Metric.objects.filter(run=run).values_list("name", "step"))
    rows.update(("sample", s) for s in Sample.objects.filter(run=run).values_list("step", flat=True))
    return rows


def count_errors(run, steps: int, every: int) -> tuple[int, int]:
    """(duplicate rows, missing points)"""
    rows = points(run)
    evals = sorted(set(range(0, steps, every)) | {steps})
    expected = Counter({("train/loss", s): 1 for s in range(1, steps + 1)})
    for name in ("eval/reward", "eval/kl"):
        expected.update({(name, s): 1 for s in evals})
    expected.update({("sample", s): 2 for s in evals})  # 2 prompts x 1 sample
    duplicates = sum(n - 1 for k, n in rows.items() if k[0] != "sample" and n > 1)
    duplicates += sum(max(0, rows[k] - n) for k, n in expected.items() if k[0] == "sample")
    missing = sum(max(0, n - rows[k]) for k, n in expected.items())
    return duplicates, missing


def model_hash(run) -> str:
    folder = Path(run.out_dir) / "model"
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def train_loss_steps(run) -> int:
    from webapp.experiments.models import Metric

    return Metric.objects.filter(run=run, name="train/loss").count()


def checkpoint_at(run, step: int) -> bool:
    return (Path(run.out_dir) / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()


def result(run, follow: Follow, steps: int, every: int, **extra) -> dict:
    run.refresh_from_db()
    duplicates, missing = count_errors(run, steps, every)
    return {"lost": int(run.state != "succeeded"), "twice": follow.twice, "duplicates": duplicates,
            "missing": missing, "running_again_s": follow.running_again, "done_s": follow.done,
            "attempts": run.attempts, **extra}


# --- scenarios ------------------------------------------------------------------------------------

def sigkill(bench: Bench, ctx: dict) -> dict:
    if "w" not in ctx:
        ctx["queue"], [ctx["w"]] = bench.workers("sigkill", [""])
    steps, every = 30, 15
    run = bench.create(ctx["queue"], steps, every)
    wait_for(lambda: train_loss_steps(run) >= 2, what="steps")
    [proc] = ctx["w"].run_processes()
    os.kill(proc, signal.SIGKILL)
    follow = Follow(run, [ctx["w"]], 1)
    follow.until_done()
    return result(run, follow, steps, every)


def sigstop(bench: Bench, ctx: dict) -> dict:
    if "ws" not in ctx:
        ctx["queue"], ctx["ws"] = bench.workers("sigstop", ["a", "b"], {"PTLAB_WATCH_SECONDS": "0.5"})
    steps, every = 24, 4
    run = bench.create(ctx["queue"], steps, every)
    wait_for(lambda: checkpoint_at(run, 4) and train_loss_steps(run) >= 6, what="a checkpoint")
    run.refresh_from_db()
    victim = next(w for w in ctx["ws"] if run.claimed_by.startswith(f"{w.name}@"))
    pool = victim.pool_child()
    [zombie] = victim.run_processes()
    freeze(zombie)
    os.kill(pool, signal.SIGSTOP)
    follow = Follow(run, ctx["ws"], 1)
    follow.until_done()
    before, model = points(run), model_hash(run)
    os.kill(zombie, signal.SIGCONT)
    wait_for(lambda: proc_state(zombie) in ("Z", None), what="the zombie to give up")
    os.kill(pool, signal.SIGCONT)
    wait_for(lambda: proc_state(zombie) is None, 60, "reaped")
    after = points(run)
    late_writes = sum((after - before).values()) + sum((before - after).values())
    return result(run, follow, steps, every, late_writes=late_writes, model_replaced=int(model_hash(run) != model))


def hung(bench: Bench, ctx: dict) -> dict:
    if "w" not in ctx:
        env = {"PTLAB_WATCH_SECONDS": "0.5", "PTLAB_HUNG_AFTER_SECONDS": "6", "PTLAB_REAP_AFTER_SECONDS": "600"}
        ctx["queue"], [ctx["w"]] = bench.workers("hung", [""], env)
    steps, every = 16, 4
    run = bench.create(ctx["queue"], steps, every)
    wait_for(lambda: checkpoint_at(run, 4) and train_loss_steps(run) >= 5, what="a checkpoint")
    [proc] = ctx["w"].run_processes()
    freeze(proc)
    follow = Follow(run, [ctx["w"]], 1)
    follow.until_done()
    return result(run, follow, steps, every)


def dbcut(bench: Bench, ctx: dict) -> dict | None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    if "w" not in ctx:
        ctx["queue"], [ctx["w"]] = bench.workers("dbcut", [""])
    steps, every = 24, 4
    run = bench.create(ctx["queue"], steps, every)
    wait_for(lambda: checkpoint_at(run, 4) and train_loss_steps(run) >= 6, what="a checkpoint")
    attempts = run.__class__.objects.get(pk=run.pk).attempts
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    follow = Follow(run, [ctx["w"]], attempts)
    follow.until_done()
    return result(run, follow, steps, every)


def broker(bench: Bench, ctx: dict) -> dict:
    from tests.celery_broker import celery_app_on

    if "w" not in ctx:
        ctx["queue"], [ctx["w"]] = bench.workers("broker", [""], {"PTLAB_RESEND_AFTER_SECONDS": "1"})
    steps, every = 4, 2
    with celery_app_on(f"redis://127.0.0.1:{free_port()}/0"):
        try:
            run = bench.create(ctx["queue"], steps, every)
            raised = 0
        except Exception:
            raised = 1
            raise
    follow = Follow(run, [ctx["w"]], 0)  # from the broker's return
    follow.until_done()
    return result(run, follow, steps, every, creation_failed=raised)


def skew(bench: Bench, ctx: dict) -> dict:
    from django.utils import timezone

    from webapp.experiments.models import Run
    from webapp.workers.recovery import do_reap

    if "w" not in ctx:
        ctx["queue"], [ctx["w"]] = bench.workers("skew", [""])
    steps, every = 80, 20
    run = bench.create(ctx["queue"], steps, every)
    wait_for(lambda: Run.objects.filter(pk=run.pk, state="running").exists(), what="running")
    real_now, reaped = timezone.now, []

    def reap_ahead():
        with mock.patch.object(timezone, "now", lambda: real_now() + timezone.timedelta(seconds=120)):
            reaped.extend(do_reap())

    follow = Follow(run, [ctx["w"]], 1)
    follow.until_done(also=reap_ahead)
    return result(run, follow, steps, every, requeued=len(reaped))


# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--broker", default=os.environ.get("PTLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--database", default="", help="a PostgreSQL URL (dropped and created); default SQLite")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    os.environ["DATABASE_URL"] = prepare_database(args.database, folder)
    os.environ["PTLAB_ARTIFACT_ROOT"] = str(folder / "artifacts")
    os.environ["CELERY_BROKER_URL"] = args.broker
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    bench = Bench(args, folder)
    print(f"database: {connection.vendor}; broker {args.broker}; {args.repeats} repetitions; logs in {folder}")
    rows = []
    for name in args.scenarios.split(","):
        ctx, results = {}, []
        try:
            for _ in range(args.repeats):
                r = globals()[name](bench, ctx)
                if r is None:
                    break
                results.append(r)
                print(name, r, flush=True)
        finally:
            for w in [ctx.get("w"), *ctx.get("ws", [])]:
                if w:
                    w.stop()
        if results:
            rows.append((name, results))
    print()
    print("| scenario | repetitions | runs lost | trained twice at once | duplicate rows | missing points | "
          "other | running again after the fault, s (median, max) | finished after the fault, s (median, max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, results in rows:
        other = []
        for key in ("late_writes", "model_replaced", "requeued", "creation_failed"):
            if key in results[0]:
                other.append(f"{key.replace('_', ' ')} {sum(r[key] for r in results)}")
        attempts = Counter(r["attempts"] for r in results)
        other.append("attempts " + ", ".join(f"{a}: {n}" for a, n in sorted(attempts.items())))
        again = [r["running_again_s"] for r in results if r["running_again_s"] is not None]
        done = [r["done_s"] for r in results if r["done_s"] is not None]

        def spread(xs):
            return f"{statistics.median(xs):.1f}, {max(xs):.1f}" if xs else "-"

        print(f"| {name} | {len(results)} | {sum(r['lost'] for r in results)} | {sum(r['twice'] for r in results)} | "
              f"{sum(r['duplicates'] for r in results)} | {sum(r['missing'] for r in results)} | {'; '.join(other)} | "
              f"{spread(again)} | {spread(done)} |")
    shutil.rmtree(folder / "artifacts", ignore_errors=True)


if __name__ == "__main__":
    main()
