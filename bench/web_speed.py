"""Issue 3's web app benchmark: metric ingest rate, click-to-running latency, app run vs CLI run.

    .venv/bin/python bench/web_speed.py [--pg] [--redis redis://127.0.0.1:6379/13] [--gap S] [--clicks N]
    .venv/bin/python bench/web_speed.py --latency-only --clicks 20 --gap 0 --worker-log /tmp/worker.log

1. Ingest: DatabaseSink.log_metrics into a fresh SQLite file (and, with --pg, a PostgreSQL database
   `webbench` that it creates and drops), points/s at 8 and 64 metrics per call.
2. Click-to-running: a real Celery worker subprocess on its own queue; time from do_create_experiment
   to Run.started_at (the claim), for 1 + `--clicks` one-run experiments run one after another, each
   `--gap` s after the previous one finished (0: as it ends, while the worker replaces its process);
   excludes model loading, which comes after the claim. `--latency-only` measures nothing else;
   `--worker-log` keeps the worker's log (INFO, timestamps).
3. The same tiny SFT config through the app (worker) and through `python -m training run`: the
   trainer's own RunResult.seconds ("finished in X s" in the run log vs the CLI's line), and the
   claim-to-finish time of the app run and the CLI process wall time (with imports) are shown too.
Both training processes get OMP_NUM_THREADS=1 (the machine is shared). Every process it starts is stopped.
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
SQLITE_URL = "sqlite:////tmp/webbench.sqlite3"
PG_URL = "postgres://postgres@127.0.0.1:5432/webbench"
QUEUE = "webbench"
GAP = float(os.environ.get("WEBBENCH_GAP", "1.0"))  # seconds idle between a run's end and the next click
CLICKS = int(os.environ.get("WEBBENCH_CLICKS", "5"))  # click-to-running measurements after the first
LATENCY_ONLY = os.environ.get("WEBBENCH_LATENCY_ONLY") == "1"
REPEATS = 3  # app runs and CLI runs of the same config (medians compared)


def env_for(db_url: str, redis_url: str, artifacts: Path) -> dict:
    return dict(os.environ, DATABASE_URL=db_url, CELERY_BROKER_URL=redis_url, DJANGO_SETTINGS_MODULE="webapp.settings", PTLAB_ALLOW_DEV_KEY="1",
                PTLAB_ARTIFACT_ROOT=str(artifacts), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PTLAB_LOG_LEVEL="WARNING")


def migrate(env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)


# --- child: runs with the environment already set ----------------------------------------------------
def child(part: str) -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.contrib.auth.models import User

    from webapp.experiments.actions import do_create_experiment
    from webapp.experiments.models import Experiment, Metric, Run, Worker
    from webapp.workers.sink import DatabaseSink

    user, _ = User.objects.get_or_create(username="bench")
    fields = dict(base_model="tiny", task="arithmetic", methods=["sft"], seeds=1, eval_samples=1,
                  max_new_tokens=8, rl_from_sft=False, queue=QUEUE, hyperparams={})

    if part == "ingest":
        exp = Experiment.objects.create(owner=user, name="ingest", max_steps=1, **fields)
        out = {}
        for width in (8, 64):
            run = Run.objects.create(experiment=exp, method="sft", config={}, state=Run.State.RUNNING, attempts=1)
            sink = DatabaseSink(run)
            metrics = {f"train/m{i}": float(i) for i in range(width)}  # no eval/: the plain ingest path
            calls = max(200, 20_000 // width)
            t = time.perf_counter()
            for step in range(calls):
                sink.log_metrics(step, metrics)
            dt = time.perf_counter() - t
            assert Metric.objects.filter(run=run).count() == calls * width
            out[width] = {"calls": calls, "points": calls * width, "s": round(dt, 3),
                          "points_per_s": round(calls * width / dt)}
        print("RESULT " + json.dumps(out))
        return

    # part == "worker": the worker subprocess is already started by the parent
    deadline = time.time() + 90
    while not Worker.objects.filter(hostname__startswith="webbench@").exists():
        if time.time() > deadline:
            raise SystemExit("worker did not report")
        time.sleep(0.2)

    def wait_done(run_id, timeout=300):
        t_end = time.time() + timeout
        while time.time() < t_end:
            run = Run.objects.get(pk=run_id)
            if run.state in ("succeeded", "failed", "cancelled"):
                return run
            time.sleep(0.1)
        raise SystemExit(f"run {run_id} did not finish")

    latencies = []
    for i in range(1 + CLICKS):  # the first one warms the worker (its first fork), reported separately
        time.sleep(GAP)  # the worker is idle (the run it finished is done) for GAP seconds
        t0 = time.time()
        exp = do_create_experiment(Experiment(owner=user, name=f"latency {i}", max_steps=2, eval_every=2,
                                              eval_prompts=2, **fields))
        run_id = exp.runs.get().pk
        while True:
            started = Run.objects.filter(pk=run_id).values_list("started_at", flat=True).get()
            if started is not None:
                break
            if time.time() - t0 > 60:
                raise SystemExit("run never claimed")
            time.sleep(0.005)
        latencies.append(started.timestamp() - t0)
        run = wait_done(run_id)
        assert run.state == "succeeded", (run.state, run.error)
    if LATENCY_ONLY:
        print("RESULT " + json.dumps({"latency_s": [round(x, 3) for x in latencies]}))
        return

    trainer, claim_to_finish = [], []
    for i in range(REPEATS):
        exp = do_create_experiment(Experiment(owner=user, name=f"vs cli {i}", max_steps=40, eval_every=20,
                                              eval_prompts=8, **fields))
        run = wait_done(exp.runs.get().pk, 400)
        assert run.state == "succeeded", (run.state, run.error)
        trainer.append(float(re.search(r"finished in ([0-9.]+) s", run.log).group(1)))
        claim_to_finish.append(round((run.finished_at - run.started_at).total_seconds(), 2))
        time.sleep(1.0)
    out = {"latency_s": [round(x, 3) for x in latencies], "app_trainer_s": trainer,
           "app_claim_to_finish_s": claim_to_finish, "config": run.config}
    print("RESULT " + json.dumps(out))


def run_child(part: str, env: dict) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", part], cwd=ROOT, env=env, capture_output=True, text=True)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not line:
        raise SystemExit(f"{part} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", action="store_true", help="also measure ingest on PostgreSQL (creates/drops webbench)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds between a run's end and the next click")
    ap.add_argument("--clicks", type=int, default=5, help="click-to-running measurements after the first")
    ap.add_argument("--latency-only", action="store_true", help="measure click-to-running only (no ingest, no CLI)")
    ap.add_argument("--worker-log", help="keep the worker's log (-l INFO, timestamps) in this file")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        return child(args.child)

    tmp = Path(tempfile.mkdtemp(prefix="webbench-"))
    results = {"load_start": os.getloadavg()}
    # 1. ingest
    Path("/tmp/webbench.sqlite3").unlink(missing_ok=True)
    env = env_for(SQLITE_URL, args.redis, tmp / "artifacts") | {
        "WEBBENCH_GAP": str(args.gap), "WEBBENCH_CLICKS": str(args.clicks),
        "WEBBENCH_LATENCY_ONLY": "1" if args.latency_only else "0"}
    migrate(env)
    if not args.latency_only:
        results["ingest_sqlite"] = run_child("ingest", env)
    if args.pg and not args.latency_only:
        psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c"]
        subprocess.run(psql + ["DROP DATABASE IF EXISTS webbench"], check=True)
        subprocess.run(psql + ["CREATE DATABASE webbench"], check=True)
        try:
            pg_env = env_for(PG_URL, args.redis, tmp / "artifacts")
            migrate(pg_env)
            results["ingest_postgres"] = run_child("ingest", pg_env)
        finally:
            subprocess.run(psql + ["DROP DATABASE IF EXISTS webbench"], check=True)

    # 2 + 3. a real worker on its own queue (Redis db of our own, flushed before and after)
    subprocess.run(["redis-cli", "-u", args.redis, "flushdb"], check=True, capture_output=True)
    log = open(args.worker_log or tmp / "worker.log", "w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", QUEUE, "-c", "1", "--prefetch-multiplier",
         "1", "-P", "prefork", "-n", "webbench@%h", "-l", "INFO" if args.worker_log else "WARNING",
         "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env | ({"PTLAB_LOG_LEVEL": "INFO"} if args.worker_log else {}), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        results["worker"] = run_child("worker", env)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        subprocess.run(["redis-cli", "-u", args.redis, "flushdb"], capture_output=True)

    if args.latency_only:
        lat = results["worker"]["latency_s"]
        print(json.dumps(results | {"load_end": os.getloadavg()}, indent=1))
        print(f"click-to-running: first (fresh worker) {lat[0]:.3f} s; median of next {len(lat) - 1} "
              f"{statistics.median(lat[1:]):.3f} s (min {min(lat[1:]):.3f}, max {max(lat[1:]):.3f}); "
              f"over 1 s: {sum(x > 1 for x in lat[1:])}")
        return

    # 3. the CLI on the same resolved config
    cfg = tmp / "cli.json"
    cfg.write_text(json.dumps(results["worker"].pop("config")))
    trainer, walls = [], []
    for i in range(REPEATS):
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "training", "run", str(cfg), "--out", str(tmp / f"cli{i}")],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        walls.append(round(time.time() - t, 2))
        m = re.search(r"finished at step (\d+) in ([0-9.]+)s", p.stdout)
        if not m:
            raise SystemExit(f"CLI failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        trainer.append(float(m.group(2)))
    results["cli"] = {"trainer_s": trainer, "process_wall_s": walls}
    results["load_end"] = os.getloadavg()

    w = results["worker"]
    lat = w["latency_s"]
    print(json.dumps(results, indent=1))
    print(f"load avg start {results['load_start']} end {results['load_end']}")
    for db in ("sqlite", "postgres"):
        if f"ingest_{db}" in results:
            r = results[f"ingest_{db}"]
            print(f"ingest {db}: 8/call {r['8']['points_per_s']} points/s, 64/call {r['64']['points_per_s']} points/s")
    print(f"click-to-running: first (fresh worker) {lat[0]:.3f} s; median of next {len(lat) - 1} "
          f"{statistics.median(lat[1:]):.3f} s (min {min(lat[1:]):.3f}, max {max(lat[1:]):.3f})")
    c = results["cli"]
    app, cli = statistics.median(w["app_trainer_s"]), statistics.median(c["trainer_s"])
    print(f"app vs CLI, RunResult.seconds (0.1 s resolution), median of {REPEATS}: {app} vs {cli} s "
          f"({100 * (app / cli - 1):+.1f}%); app claim->finish {w['app_claim_to_finish_s']} s; "
          f"CLI process wall (with imports) {c['process_wall_s']} s")


if __name__ == "__main__":
    main()
