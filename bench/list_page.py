"""Benchmark of the experiment list (issue 19) with 10,000 experiments, through Django's test client
(middleware, session, template rendering included) on a fresh SQLite file database (or $DATABASE_URL with
--use-env-db). Each experiment has its runs (2 by default, all finished) with `eval/reward` at 5 steps, a
third of them a tag, one in ten archived; a tenth are another user's, shared with the viewer.

Timed: the default page (newest first), a search, a tag + state filter, the sort by best reward (every
experiment's best final reward computed to sort), and a late page. Goal: each under 200 ms server time.

    .venv/bin/python bench/list_page.py [--experiments 10000] [--runs 2] [--repeat 10] [--use-env-db]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(use_env_db: bool) -> None:
    if not use_env_db:
        folder = Path(tempfile.mkdtemp(prefix="ptlab-bench-list-"))
        os.environ["DATABASE_URL"] = f"sqlite:///{folder / 'bench.sqlite3'}"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def fill(n: int, runs_each: int) -> None:
    from django.contrib.auth.models import User

    from webapp.experiments.models import Experiment, Metric, Run, Tag

    viewer = User.objects.create_user("bench-viewer")
    other = User.objects.create_user("bench-other")
    methods = ["sft", "dpo", "ppo", "grpo", "rloo"][:runs_each]
    now = time.time()
    Experiment.objects.bulk_create(
        [Experiment(owner=other if i % 10 == 0 else viewer, name=f"experiment {i:05d}", methods=methods,
                    base_model="tiny" if i % 2 else "SmolLM2-135M", task="arithmetic" if i % 3 else "sentiment",
                    archived=i % 10 == 5) for i in range(n)], batch_size=1000)
    exps = list(Experiment.objects.order_by("id"))
    Experiment.shared_with.through.objects.bulk_create(
        [Experiment.shared_with.through(experiment=e, user=viewer) for e in exps if e.owner_id == other.pk])
    Run.objects.bulk_create([Run(experiment=e, method=m, config={}, state=Run.State.SUCCEEDED, step=100, total=100)
                             for e in exps for m in methods], batch_size=2000)
    runs = list(Run.objects.order_by("id").values_list("id", flat=True))
    Metric.objects.bulk_create(
        [Metric(run_id=r, step=s, name=name, value=(r * 7919 % 1000) / 1000 + s / 1000, wall_time=now)
         for r in runs for s in (0, 25, 50, 75, 100) for name in ("eval/reward", "eval/kl", "train/loss")],
        batch_size=5000)
    tags = [Tag.objects.create(name=t) for t in ("baseline", "ablation", "kl-sweep")]
    Experiment.tags.through.objects.bulk_create(
        [Experiment.tags.through(experiment=e, tag=tags[i % 3]) for i, e in enumerate(exps) if i % 3 == 0],
        batch_size=2000)
    return viewer


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {1000 * statistics.median(xs):6.1f} ms, max {1000 * xs[-1]:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--use-env-db", action="store_true")
    args = parser.parse_args()
    setup(args.use_env_db)
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    setup_test_environment()  # response.context, for the row counts

    t0 = time.perf_counter()
    viewer = fill(args.experiments, args.runs)
    print(f"filled {args.experiments} experiments x {args.runs} runs x 5 evaluations "
          f"in {time.perf_counter() - t0:.1f} s ({connection.vendor})")
    client = Client()
    client.force_login(viewer)
    cases = {
        "default (newest first)": {},
        "search 'sentiment dpo'": {"q": "sentiment dpo"},
        "tag + state filter": {"tag": "baseline", "state": "finished"},
        "sort by best reward": {"sort": "-reward"},
        "page 150 by name": {"sort": "name", "page": "150"},
        "all incl. archived, shared": {"archived": "all", "owner": "shared"},
    }
    client.get("/")  # warm-up: templates, URL resolver
    worst = 0.0
    for label, params in cases.items():
        times = []
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                response = client.get("/", params)
                times.append(time.perf_counter() - t)
            assert response.status_code == 200
        worst = max(worst, statistics.median(times))
        shown = len(response.context["experiments"])
        print(f"{label:28s} {ms(times)}  ({len(ctx.captured_queries)} queries, {shown} rows of "
              f"{response.context['page'].paginator.count})")
    print(f"worst median: {1000 * worst:.1f} ms (goal: under 200 ms)")


if __name__ == "__main__":
    main()
