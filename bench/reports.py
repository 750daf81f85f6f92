"""Benchmark of report exports (issue 6): an experiment of 8 finished runs (SFT, DPO, GRPO, PPO x 2 seeds)
x 1,000 steps with the synthetic demo curves (every trainer key at every step: ~46,000 metric rows),
11 evaluations x 16 eval prompts x 4 completions per run, and ~300 votes by two raters, in a SQLite
file database. Measures the server time of each download through Django's test client (access, the
report document, the format; the PDF includes starting Chromium), the document alone, and the sizes.

    .venv/bin/python bench/reports.py [--repeat 3] [--db PATH]

Goals (issue 6): HTML under 2 s, PDF under 10 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("json", "csv", "votes.csv", "md", "html", "pdf")


def setup(db: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("PTLAB_ALLOW_DEV_KEY", "1")  # a benchmark, not a deployment
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build():
    from django.contrib.auth.models import User

    from tests.webapp.reports_fixtures import make_report_experiment
    from webapp.experiments import actions

    actions.send_to_workers = lambda *a, **kw: None  # no broker: the runs are filled in as finished
    owner = User.objects.create_user("bench")
    rater = User.objects.create_user("bench-rater")

    exp = make_report_experiment(owner, [owner, rater], steps=1000, eval_every=100, prompts=16, votes=300,
                                 name="Report benchmark")
    # four completions per prompt, as the default eval settings give
    from webapp.experiments.models import Sample

    extra = [Sample(run_id=s.run_id, step=s.step, prompt_id=s.prompt_id, index=k, prompt=s.prompt,
                    completion=s.completion[::-1], reward=s.reward)
             for s in Sample.objects.filter(run__experiment=exp) for k in (1, 2, 3)]
    Sample.objects.bulk_create(extra, batch_size=5000)
    return exp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    setup(args.db or Path(tmp.name) / "bench.sqlite3")
    from django.test import Client
    from django.urls import reverse

    from webapp.experiments.models import Metric, Sample
    from webapp.ratings.models import Vote
    from webapp.reports.report import build_report

    t = time.perf_counter()
    exp = build()
    print(f"built in {time.perf_counter() - t:.1f} s: {exp.runs.count()} runs, "
          f"{Metric.objects.filter(run__experiment=exp).count():,} metric rows, "
          f"{Sample.objects.filter(run__experiment=exp).count():,} samples, {Vote.objects.filter(experiment=exp).count()} votes")
    print(f"load before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    client = Client()
    client.force_login(exp.owner)
    rows = []
    times = []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        build_report(exp)
        times.append((time.perf_counter() - t, time.process_time() - c))
    rows.append(("report document (build_report)", times, None))
    for fmt in FORMATS:
        times, size = [], 0
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            response = client.get(reverse("reports:export", args=[exp.pk, fmt]))
            times.append((time.perf_counter() - t, time.process_time() - c))
            assert response.status_code == 200, fmt
            size = len(response.content)
        rows.append((fmt, times, size))
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print("\n| Export | median wall (s) | min wall (s) | CPU of this process (s) | size |")
    print("|---|---|---|---|---|")
    for name, times, size in rows:
        walls = [w for w, _ in times]
        print(f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f} | "
              f"{statistics.median(c for _, c in times):.2f} | {'' if size is None else f'{size / 1024:,.0f} kB'} |")


if __name__ == "__main__":
    main()
