"""Benchmark of a report import (issue 13): a report of ~200,000 points (PTLAB_MAX_IMPORT_POINTS: metric
points + samples + votes) posted to the import page through Django's test client, in a SQLite file
database. Measures the request's time and, where the import is a background job (after issue 13), the
job's time as a worker runs it (`do_run_import_job`, in this process).

    .venv/bin/python bench/imports.py [--points 199000] [--repeat 2] [--db PATH]

The same script runs on a checkout before the change (the request imports, the job column stays empty).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(db: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("PTLAB_ALLOW_DEV_KEY", "1")  # a benchmark, not a deployment
    os.environ.setdefault("PTLAB_ARTIFACT_ROOT", str(db.parent / "artifacts"))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def document(points: int) -> dict:
    """A real report (8 runs, samples, votes) padded with metric points up to `points` in all."""
    from django.contrib.auth.models import User

    from tests.webapp.reports_fixtures import make_report_experiment
    from webapp.experiments import actions
    from webapp.reports.report import build_report

    actions.send_to_workers = lambda *a, **kw: None  # no broker: the runs are filled in as finished
    owner, rater = User.objects.create_user("bench-owner"), User.objects.create_user("bench-rater")
    doc = build_report(make_report_experiment(owner, [owner, rater], steps=100, eval_every=50, votes=100))
    doc["votes"] = [{**v, "rater": f"{v['rater']}-elsewhere"} for v in doc["votes"]]
    have = sum(len(p) for p in doc["metrics"].values()) + sum(len(s) for s in doc["samples"].values()) + len(doc["votes"])
    keys = list(doc["metrics"])
    step = 0
    while have < points:
        for key in keys:
            if have >= points:
                break
            doc["metrics"][key].append([1000 + step, "train/bench", 0.001 * step, 1.0 + step])
            have += 1
        step += 1
    return doc, have


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=199_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    db = args.db or Path(tempfile.mkdtemp(prefix="ptlab-bench-")) / "bench.sqlite3"
    setup(db)
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    try:
        from webapp.experiments import jobs as background_jobs
        from webapp.reports import jobs
        from webapp.reports.models import ImportJob

        background_jobs.send_job = lambda task, queue, job_id: None  # no broker: the job is run below, as a worker would
    except ImportError:  # before issue 13: no jobs
        ImportJob = None
    doc, points = document(args.points)
    body = json.dumps(doc).encode()
    user = User.objects.create_user("bench-importer")
    client = Client()
    client.force_login(user)
    requests, runs = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        response = client.post("/reports/import/", {"file": SimpleUploadedFile("report.json", body)})
        requests.append(time.perf_counter() - t)
        assert response.status_code == 302, response.content[:2000]
        if ImportJob is not None:
            job = ImportJob.objects.latest("id")
            t = time.perf_counter()
            state = jobs.do_run_import_job(job.pk)
            runs.append(time.perf_counter() - t)
            assert state == "done", ImportJob.objects.get(pk=job.pk).message
    print(f"{points} points, {len(body) / 2**20:.1f} MiB of JSON, {len(doc['runs'])} runs")
    print(f"request: median {statistics.median(requests):.2f} s (min {min(requests):.2f}, max {max(requests):.2f})")
    if runs:
        print(f"job in the worker: median {statistics.median(runs):.2f} s (min {min(runs):.2f})")


if __name__ == "__main__":
    main()
