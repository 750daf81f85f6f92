"""Issue 3: one run through the app (a real Celery worker, the database sink) against the same resolved config
on the CLI (`python -m training run`, file sink), alternating, on runs long enough (~1 min) to see 5%.

    .venv/bin/python bench/app_vs_cli.py [--method sft --steps 1500 --eval-every 250 --pairs 3]

Per run it records the trainer's own seconds (`RunResult.seconds`, load to save: "finished in X s" in the run's
log, and the CLI's "... in X s" line) and the wall time around it: for the app, click (do_create_experiment)
to the run's finished_at (queueing, the worker's fork, model loading included); for the CLI, the process
wall time (Python imports included). Pairs alternate which goes first. The database is a fresh SQLite file,
the broker the Redis at --redis (the db is flushed before and after); every process started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.web_speed import env_for, migrate  # noqa: E402

QUEUE = "appcli"


def setup_app(redis_url: str, threads: int) -> tuple[dict, Path]:
    """A fresh SQLite database and artifact root, migrated; this process's Django set up on them."""
    tmp = Path(tempfile.mkdtemp(prefix="appbench-"))
    env = env_for(f"sqlite:///{tmp / 'db.sqlite3'}", redis_url, tmp / "artifacts")
    env["OMP_NUM_THREADS"] = str(threads)  # the worker's and the CLI's torch threads alike
    migrate(env)
    os.environ.update(env)
    import django

    django.setup()
    return env, tmp


def start_worker(env: dict, tmp: Path, queue: str) -> subprocess.Popen:
    """One Celery worker process (as `make run` starts it) on `queue`; returns once it has reported in."""
    from webapp.experiments.models import Worker

    log = open(tmp / "worker.log", "w")  # noqa: SIM115 - the worker writes to it until the end
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queue, "-c", "1", "--prefetch-multiplier",
         "1", "-P", "prefork", "-n", f"{queue}@%h", "-l", "WARNING", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while not Worker.objects.filter(hostname__startswith=f"{queue}@").exists():
        if time.time() > deadline or worker.poll() is not None:
            stop_worker(worker)
            raise SystemExit(f"worker did not report:\n{(tmp / 'worker.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return worker


def stop_worker(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)


def wait_finished(run_id: int, poll: float = 0.2):
    from webapp.experiments.models import Run

    while True:
        run = Run.objects.get(pk=run_id)
        if run.state in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(poll)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="sft")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the worker and the CLI")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()

    env, tmp = setup_app(args.redis, args.threads)
    import redis
    from django.contrib.auth.models import User

    from webapp.experiments.actions import do_create_experiment
    from webapp.experiments.models import Experiment

    broker = redis.Redis.from_url(args.redis)
    broker.flushdb()
    worker = start_worker(env, tmp, QUEUE)
    user, _ = User.objects.get_or_create(username="bench")
    fields = dict(base_model=args.model, task="arithmetic", methods=[args.method], seeds=1, max_steps=args.steps,
                  eval_every=args.eval_every, rl_from_sft=False, queue=QUEUE, hyperparams={})
    rows: list[dict] = []
    try:
        def app_run(i: int) -> dict:
            t0 = time.time()
            exp = do_create_experiment(Experiment(owner=user, name=f"app {i}", **fields))
            run = wait_finished(exp.runs.get().pk)
            assert run.state == "succeeded", (run.state, run.error)
            trainer = float(re.search(r"finished in ([0-9.]+) s", run.log).group(1))
            return {"side": "app", "trainer_s": trainer, "wall_s": run.finished_at.timestamp() - t0,
                    "config": run.config}

        def cli_run(i: int, config: dict) -> dict:
            cfg = tmp / f"cli{i}.json"
            cfg.write_text(json.dumps(config))
            t0 = time.time()
            p = subprocess.run([sys.executable, "-m", "training", "run", str(cfg), "--out", str(tmp / f"cli{i}")],
                               cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.time() - t0
            m = re.search(r"at step \d+ in ([0-9.]+)s", p.stdout)
            if p.returncode or not m:
                raise SystemExit(f"CLI failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
            return {"side": "cli", "trainer_s": float(m.group(1)), "wall_s": wall}

        first = app_run(-1)  # warm-up: the resolved config, caches, the worker's first fork (not counted)
        config = first["config"]
        print(f"warm-up app run: trainer {first['trainer_s']:.1f} s", flush=True)
        for i in range(args.pairs):
            order = ("app", "cli") if i % 2 == 0 else ("cli", "app")
            for side in order:
                row = app_run(i) if side == "app" else cli_run(i, config)
                row.pop("config", None)
                rows.append(row)
                print(f"pair {i} {side}: trainer {row['trainer_s']:.1f} s, wall {row['wall_s']:.1f} s", flush=True)
    finally:
        stop_worker(worker)
        broker.flushdb()

    med = {f"{side}_{k}": statistics.median(r[k] for r in rows if r["side"] == side)
           for side in ("app", "cli") for k in ("trainer_s", "wall_s")}
    print(json.dumps(med))
    print(f"app vs CLI ({args.method}, {args.model}, {args.steps} steps, eval every {args.eval_every}, "
          f"{args.pairs} pairs, medians): trainer {med['app_trainer_s']:.1f} vs {med['cli_trainer_s']:.1f} s "
          f"({100 * (med['app_trainer_s'] / med['cli_trainer_s'] - 1):+.1f}%), wall {med['app_wall_s']:.1f} vs "
          f"{med['cli_wall_s']:.1f} s ({100 * (med['app_wall_s'] / med['cli_wall_s'] - 1):+.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "medians": med}, indent=1))


if __name__ == "__main__":
    main()
