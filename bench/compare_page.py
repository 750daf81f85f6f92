"""Benchmark of the comparison page (issue 4): an experiment of 8 runs (DPO, PPO, GRPO, RLOO x 2 seeds)
x 5,000 logged steps x 20 metrics (800,000 metric rows, every metric at every step: the worst case)
in a SQLite file database, plus 51 evaluations x 16 prompts x 4 completions of samples per run.

Runs end the way the app ends them (`do_finish_run`), which stores each run's downsampled series
(compare.models.SeriesSummary). Measures, through Django's test client (middleware, session and
template rendering included): the server time and response size of the page and its JSON endpoints,
cold (nothing cached in the process: the first view after the server starts) and warm, cold for runs
without stored series (finished before they were stored: read from the metric rows; a GET stores
nothing),
while a run trains (new rows since the last poll), the cost of storing a run's series when it ends,
and the query count for 2 vs 8 runs.

    .venv/bin/python bench/compare_page.py [--db PATH] [--repeat 5]

The database is built once (a few minutes: 800,000 rows) and reused while its spec is unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [(m, s) for m in ("dpo", "ppo", "grpo", "rloo") for s in (0, 1)]
STEPS = 5000
EVAL = ["eval/reward", "eval/reward_std", "eval/kl", "eval/kl_stderr", "eval/length"]
TRAIN = {  # 15 of each trainer's own keys: with the 5 eval keys, 20 metrics at every step
    "dpo": ["loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
            "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "num_tokens",
            "entropy", "mean_token_accuracy", "epoch_frac"],
    "ppo": ["loss/policy", "loss/value", "loss/total", "policy/clipfrac", "policy/approxkl", "policy/entropy",
            "objective/kl", "objective/scores", "objective/non_score_reward", "objective/rlhf_reward", "val/mean",
            "completions/mean_length", "grad_norm", "learning_rate", "num_tokens"],
    "grpo": ["loss", "reward", "reward_std", "kl", "completions/mean_length", "completions/max_length",
             "completions/min_length", "completions/clipped_ratio", "clip_ratio/region_mean", "entropy",
             "frac_reward_zero_std", "grad_norm", "learning_rate", "num_tokens", "step_time"],
}
TRAIN["rloo"] = TRAIN["grpo"]
EVAL_SAMPLES_EVERY, PROMPTS, PER_PROMPT = 100, 16, 4
SPEC = f"v2 {RUNS} {STEPS} {EVAL} {TRAIN} {EVAL_SAMPLES_EVERY} {PROMPTS} {PER_PROMPT}"


def setup(db: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["ALLOWED_HOSTS"] = "testserver"  # Django's test client
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("PTLAB_ALLOW_DEV_KEY", "1")  # a benchmark, not a deployment
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def build(db: Path) -> None:
    """The experiment, its runs, their metrics and samples (skipped when the file has this spec)."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection, transaction

    from webapp.experiments.actions import do_finish_run
    from webapp.experiments.models import Experiment, Run, Sample

    marker = db.with_suffix(".spec")
    if db.exists() and marker.exists() and marker.read_text() == SPEC:
        return
    for path in (db, marker):
        path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="bench-password-123")
    exp = Experiment.objects.create(owner=user, name="bench: 8 runs x 5,000 steps", task="sentiment",
                                    methods=["dpo", "ppo", "grpo", "rloo"], seeds=2, max_steps=STEPS,
                                    eval_every=1, eval_prompts=PROMPTS, eval_samples=PER_PROMPT)
    small = Experiment.objects.create(owner=user, name="bench: 2 runs", task="sentiment", methods=["dpo", "ppo"],
                                      seeds=1, max_steps=STEPS)
    rng = random.Random(0)
    start = 1.7e9
    for exp_, runs in ((exp, RUNS), (small, RUNS[::4])):
        for method, seed in runs:
            config = exp_.run_config(method, seed)
            run = Run.objects.create(experiment=exp_, method=method, seed=seed, config=config, state="running",
                                     step=STEPS, total=STEPS, attempts=1)
            names = EVAL + [f"train/{k}" for k in TRAIN[method]]
            rows = []
            for step in range(STEPS + 1):
                progress = step / STEPS
                wall = start + step * 0.8 + rng.random() * 0.05
                for name in names:
                    if name == "train/num_tokens":
                        value = 512.0 * step
                    elif name == "eval/reward":
                        value = 0.2 + 0.5 * (1 - math.exp(-4 * progress)) + rng.gauss(0, 0.03) + 0.02 * seed
                    elif name == "eval/kl":
                        value = 0.0 if step == 0 else 6 * progress ** 1.2 + abs(rng.gauss(0, 0.1))
                    else:
                        value = math.exp(-2 * progress) + rng.gauss(0, 0.1)
                    rows.append((run.pk, step, name, value, wall))
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany("INSERT INTO experiments_metric (run_id, step, name, value, wall_time) "
                                   "VALUES (%s, %s, %s, %s, %s)", rows)
            samples = [Sample(run=run, step=step, prompt_id=p, index=i, prompt=f"Write a review of film {p}.",
                              completion=f"Step {step}: a {rng.choice(['great', 'dull', 'fine'])} film. " * 3,
                              reward=rng.random())
                       for step in range(0, STEPS + 1, EVAL_SAMPLES_EVERY) for p in range(PROMPTS)
                       for i in range(PER_PROMPT)]
            Sample.objects.bulk_create(samples, batch_size=2000)
            assert do_finish_run(run, Run.State.SUCCEEDED, note="finished")  # stores its series once committed
            print(f"  built {exp_.name} / {method} seed {seed}: {len(rows)} metric rows "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    marker.write_text(SPEC)


def measure(repeat: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from webapp.compare import loader as data
    from webapp.compare.models import SeriesSummary
    from webapp.experiments.models import Experiment, Metric, Run

    client = Client()
    client.force_login(User.objects.get(username="bench"))
    big = Experiment.objects.get(name__startswith="bench: 8")
    small = Experiment.objects.get(name="bench: 2 runs")
    page = reverse("compare:experiment", args=[big.pk])
    figs = reverse("compare:experiment_data", args=[big.pk])
    samples = reverse("compare:experiment_samples", args=[big.pk])

    cpu = []

    def get(url: str) -> tuple[float, int, int]:
        reset_queries()
        with CaptureQueriesContext(connection) as ctx:
            t, c = time.perf_counter(), time.process_time()
            response = client.get(url)
            elapsed = time.perf_counter() - t
            cpu.append(time.process_time() - c)  # this process's CPU: the server's work, less the load
        assert response.status_code == 200, (url, response.status_code)
        return elapsed, len(response.content), len(ctx.captured_queries)

    def timed(url: str, cold: bool = False, rebuild: bool = False, unstored: bool = False) -> dict:
        times, size, queries = [], 0, 0
        cpu.clear()
        for _ in range(repeat):
            if unstored:  # as if the runs had finished before their series were stored
                SeriesSummary.objects.filter(run__experiment=big).delete()
            if cold or rebuild:
                data.clear_cache(series=cold)
            elapsed, size, queries = get(url)
            times.append(elapsed)
        if unstored:  # stored again, as `manage.py store_summaries` would (a GET never writes)
            data.store_summaries(list(big.runs.values_list("pk", flat=True)))
        return {"median_ms": round(1000 * statistics.median(times)), "min_ms": round(1000 * min(times)),
                "max_ms": round(1000 * max(times)), "cpu_median_ms": round(1000 * statistics.median(cpu)),
                "bytes": size, "queries": queries}

    assert SeriesSummary.objects.filter(run__experiment=big).count() == len(RUNS), "rebuild: rm the --db file"
    out = {}
    out["page, cold (first view after a server start: stored series read)"] = timed(page, cold=True)
    out["page, cold, no stored series (every needed metric row read)"] = timed(
        page, cold=True, unstored=True)
    out["page, warm (series cached)"] = timed(page)
    for x, smoothing in (("step", 0), ("step", 0.6), ("tokens", 0.6), ("wall", 0)):
        url = f"{figs}?x={x}&smoothing={smoothing}"
        out[f"data.json x={x} smoothing={smoothing}, series cached, figures rebuilt"] = timed(url, rebuild=True)
        out[f"data.json x={x} smoothing={smoothing}, finished runs: bytes cached"] = timed(url)
    out["data.json, cold"] = timed(figs, cold=True)
    out["data.json, cold, no stored series"] = timed(figs, cold=True, unstored=True)
    out["samples.json (last step), page's samples"] = timed(samples)

    # A run still training: 20 new rows per poll (one step of every metric), then a poll.
    run = big.runs.order_by("id").first()
    Run.objects.filter(pk=run.pk).update(state="running")
    data.clear_cache()  # a server that saw the run running (its cached series are not frozen)
    get(figs)  # warm, with the run active
    names = list(Metric.objects.filter(run=run, step=STEPS).values_list("name", flat=True))
    times = []
    cpu.clear()
    for i in range(repeat):
        step = STEPS + 1 + i
        Metric.objects.bulk_create([Metric(run=run, step=step, name=n, value=0.5, wall_time=1.8e9 + step)
                                    for n in names])
        elapsed, size, queries = get(figs)
        times.append(elapsed)
    Metric.objects.filter(run=run, step__gt=STEPS).delete()
    Run.objects.filter(pk=run.pk).update(state="succeeded")
    out["data.json while a run trains (20 new rows per poll)"] = {
        "median_ms": round(1000 * statistics.median(times)), "min_ms": round(1000 * min(times)),
        "max_ms": round(1000 * max(times)), "cpu_median_ms": round(1000 * statistics.median(cpu)), "bytes": size,
        "queries": queries}

    # What a run's end costs its worker: reading, downsampling and storing its series.
    times, cpu_store = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        data.store_summaries([run.pk])
        times.append(time.perf_counter() - t)
        cpu_store.append(time.process_time() - c)
    stored = SeriesSummary.objects.filter(run__experiment=big)
    sizes = [len(json.dumps(s, separators=(",", ":"))) for s in stored.values_list("series", flat=True)]
    out["store_summaries (one run's end, in its worker)"] = {
        "median_ms": round(1000 * statistics.median(times)), "min_ms": round(1000 * min(times)),
        "max_ms": round(1000 * max(times)), "cpu_median_ms": round(1000 * statistics.median(cpu_store)),
        "bytes": statistics.median(sizes), "queries": None}

    # Query counts: 2 runs vs 8 runs, cold cache (the most queries a request makes).
    counts = {}
    for label, exp in (("2 runs", small), ("8 runs", big)):
        for name in ("compare:experiment", "compare:experiment_data", "compare:experiment_samples"):
            data.clear_cache()
            counts[f"{name} {label}"] = get(reverse(name, args=[exp.pk]))[2]
        SeriesSummary.objects.filter(run__experiment=exp).delete()
        data.clear_cache()
        counts[f"compare:experiment {label}, no stored series"] = get(reverse("compare:experiment", args=[exp.pk]))[2]
        data.store_summaries(list(exp.runs.values_list("pk", flat=True)))
    ids = [str(r) for r in big.runs.values_list("pk", flat=True)]
    for n in (2, 8):
        data.clear_cache()
        counts[f"compare:runs (across experiments) {n} runs"] = get(reverse("compare:runs") + "?run=" + "&run=".join(ids[:n]))[2]
    out["queries"] = counts
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=ROOT / "var" / "bench" / "compare_page.sqlite3")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    setup(args.db.resolve())
    build(args.db.resolve())
    load_before = os.getloadavg()
    results = measure(args.repeat)
    load_after = os.getloadavg()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(results, indent=2))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; uptime: {uptime}")
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
