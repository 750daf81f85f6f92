"""Issue 3: the new-experiment form's prefilled example, submitted as it is, through one real worker (as
`make run` starts it): how long until every run has finished on this machine, and where each method ends.

    .venv/bin/python bench/example_run.py [--threads 1] [--seeds 3] [--redis redis://127.0.0.1:6379/11]

A fresh SQLite database; the Redis db given is flushed before and after. Prints one line per run (queued ->
started -> finished, seconds from the click) and the total, then eval/reward and eval/kl at step 0 and at
the end of each run, and the verdict table as the Markdown report prints it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app_vs_cli import setup_app, start_worker, stop_worker, wait_finished  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    ap.add_argument("--threads", type=int, default=1, help="the worker's OMP_NUM_THREADS")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per method (default: the example's)")
    args = ap.parse_args()

    env, tmp = setup_app(args.redis, args.threads)
    import redis
    from django.contrib.auth.models import User

    from webapp.experiments.forms.example import example_post_data
    from webapp.experiments.forms.experiment import ExperimentForm
    from webapp.experiments.models import Metric

    broker = redis.Redis.from_url(args.redis)
    broker.flushdb()
    user, _ = User.objects.get_or_create(username="bench")
    data = example_post_data()
    if args.seeds:
        data["seeds"] = str(args.seeds)
    worker = start_worker(env, tmp, data["queue"])
    try:
        form = ExperimentForm(data=data, user=user)
        if not form.is_valid():
            raise SystemExit(f"the example does not validate: {form.errors}")
        t0 = time.time()
        exp = form.save(owner=user)
        runs = [wait_finished(run.pk, poll=1.0) for run in exp.runs.order_by("pk")]
        total = max(r.finished_at.timestamp() for r in runs) - t0
    finally:
        stop_worker(worker)
        broker.flushdb()

    print(f"example: {exp.name!r}, {len(runs)} runs, one worker, OMP_NUM_THREADS={args.threads}")
    for r in runs:
        ev = {}
        for name in ("eval/reward", "eval/kl"):
            points = list(Metric.objects.filter(run=r, name=name).order_by("step").values_list("step", "value"))
            ev[name] = f"{points[0][1]:.3f} -> {points[-1][1]:.3f} (step {points[-1][0]})" if points else "-"
        print(f"  {r.method:5s} {r.state:9s} started {r.started_at.timestamp() - t0:6.1f} s, finished "
              f"{r.finished_at.timestamp() - t0:6.1f} s ({r.finished_at.timestamp() - r.started_at.timestamp():5.1f} s)"
              f"  eval/reward {ev['eval/reward']}  eval/kl {ev['eval/kl']}")
    print(f"click to the last run finished: {total:.1f} s ({total / 60:.1f} min)")
    from webapp.reports.formats import to_markdown
    from webapp.reports.report import build_report

    markdown = to_markdown(build_report(exp, votes=False))
    start = markdown.find("**Verdicts**")
    print(markdown[start:markdown.find("**Reward at equal KL**", start)].strip() if start >= 0 else "no verdicts")


if __name__ == "__main__":
    main()
