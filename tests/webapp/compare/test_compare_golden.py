"""Golden bytes of the comparison: the pages, their JSON endpoints and every report format on one fixed
experiment (metrics and samples written straight to the database, no training). Only what cannot be
the same twice is masked: CSRF tokens, the export time, where the checkout lies, the inlined plotly.js
and the environment a report is made on. Regenerate with PTLAB_UPDATE_GOLDEN=1 after a deliberate change."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.urls import reverse

from webapp.compare import demo
from webapp.experiments.models import Experiment, Run, Sample
from webapp.ratings.demo import simulate_votes

pytestmark = pytest.mark.django_db

GOLDEN = Path(__file__).parent / "golden"
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
ENVIRONMENT = {"python": "3.x", "packages": {"Django": "5.x"}, "git_revision": "0123456789abcdef",
               "machine": {"platform": "test", "processor": "x", "cpus": 2, "memory_gb": 1.0}, "workers": []}


def jsonb_order(value):
    """`value` with its objects' keys in PostgreSQL's jsonb order (shorter first, then bytewise): stored so,
    a JSON column reads back the same from SQLite and PostgreSQL, and so do the documents made of it."""
    if isinstance(value, dict):
        return {k: jsonb_order(value[k]) for k in sorted(value, key=lambda k: (len(k.encode()), k.encode()))}
    if isinstance(value, list):
        return [jsonb_order(v) for v in value]
    return value


def _experiment(pk: int, owner, name: str, methods: list[str], seeds: int, *, task: str = "arithmetic",
                first_run: int, proxy: tuple[str, ...] = ("ppo",), running: tuple[int, ...] = ()) -> Experiment:
    exp = Experiment.objects.create(
        pk=pk, owner=owner, name=name, base_model="tiny", task=task, methods=methods, seeds=seeds, max_steps=40,
        eval_every=10, eval_prompts=3, eval_samples=2, max_new_tokens=16, hyperparams={"dpo": {"beta": 0.1}})
    pk_run = first_run
    for seed in range(seeds):
        for method in methods:
            run = Run.objects.create(pk=pk_run, experiment=exp, method=method, seed=seed,
                                     config=exp.run_config(method, seed), state=Run.State.QUEUED)
            live = pk_run in running
            demo.fill_run(run, steps=40, eval_every=10, prompts=3, per_prompt=2, proxy=method in proxy,
                          state=Run.State.RUNNING if live else Run.State.SUCCEEDED, until=20 if live else None,
                          start=1_767_000_000.0 + pk_run, seconds_per_step=0.25 + 0.01 * pk_run)
            pk_run += 1
    Experiment.objects.filter(pk=pk).update(created=WHEN, hyperparams=jsonb_order(exp.hyperparams))
    for run in exp.runs.all():
        Run.objects.filter(pk=run.pk).update(config=jsonb_order(run.config), latest=jsonb_order(run.latest))
    exp.runs.update(created=WHEN, started_at=WHEN, finished_at=WHEN + dt.timedelta(seconds=12))
    exp.runs.filter(state=Run.State.RUNNING).update(finished_at=None)
    return Experiment.objects.get(pk=pk)


@pytest.fixture
def golden(monkeypatch):
    from webapp.compare import loader as data
    from webapp.reports import report

    data.clear_cache()

    monkeypatch.setattr(report, "environment", lambda runs: dict(ENVIRONMENT))
    owner = User.objects.create_user("golden", password="pw-golden-123", pk=7001)
    raters = [User.objects.create_user(f"rater{i}", password="pw-rater-123", pk=7002 + i) for i in range(2)]
    main = _experiment(8001, owner, "Golden <main>", ["sft", "dpo", "ppo", "grpo"], 2, first_run=8101)
    sample = Sample.objects.filter(run_id=8103, step=40).order_by("prompt_id", "index").first()
    sample.completion = '<img src=x onerror="alert(1)"> & "quotes"'
    sample.save(update_fields=["completion"])
    for rater in raters:
        main.shared_with.add(rater)
    simulate_votes(main, [owner, *raters], 24, seed=3)
    other = _experiment(8002, owner, "Golden other", ["dpo", "rloo"], 1, task="sentiment", first_run=8201,
                        running=(8202,))
    return owner, main, other


def mask(text: str) -> str:
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', 'name="csrfmiddlewaretoken" value="<csrf>"', text)
    text = re.sub(r'"exported_at": ?"[^"]*"', '"exported_at": "<time>"', text)
    text = re.sub(r"exported \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d UTC", "exported <time> UTC", text)
    text = text.replace(str(Path(settings.BASE_DIR).resolve()), "<BASE_DIR>")
    from webapp.reports import formats

    return text.replace(formats.plotly_js(), "<plotly.js>")


def check(name: str, body: bytes | str) -> None:
    text = mask(body.decode() if isinstance(body, bytes) else body)
    path = GOLDEN / f"{name}.golden"
    if os.environ.get("PTLAB_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {name}: run with PTLAB_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        at = next(i for i, (a, b) in enumerate(zip(text + "\0", expected + "\0", strict=False)) if a != b)
        raise AssertionError(f"{name} differs at {at}: got {text[max(0, at - 80):at + 80]!r}, "
                             f"expected {expected[max(0, at - 80):at + 80]!r}")


def get(client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content


def test_comparison_pages_and_data(client, golden):
    from webapp.compare import loader as data

    owner, main, other = golden
    client.force_login(owner)
    ids = list(main.runs.values_list("pk", flat=True)) + list(other.runs.values_list("pk", flat=True))
    # From the metric rows, again from the process's cache, then from the stored summaries.
    for how in ("rows", "cache", "stored"):
        if how == "stored":
            data.store_summaries(ids)
        if how != "cache":
            data.clear_cache()
        check("experiment.html", get(client, reverse("compare:experiment", args=[main.pk])))
        check("experiment_data.json", get(client, reverse("compare:experiment_data", args=[main.pk])))
        check("experiment_samples.json", get(client, reverse("compare:experiment_samples", args=[main.pk])))
    check("experiment_step10.html", get(client, reverse("compare:experiment", args=[main.pk]) + "?step=10&x=wall"))
    check("experiment_data_tokens.json",
          get(client, reverse("compare:experiment_data", args=[main.pk]) + "?x=tokens&smoothing=0.6"))
    check("experiment_data_wall.json",
          get(client, reverse("compare:experiment_data", args=[main.pk]) + "?x=wall&smoothing=0.3"))
    check("experiment_samples_step15.json",
          get(client, reverse("compare:experiment_samples", args=[main.pk]) + "?step=15"))
    picked = "?run=8101,8104,8201,8202&run=8105"
    check("runs.html", get(client, reverse("compare:runs") + picked))
    check("runs_data.json", get(client, reverse("compare:runs_data") + picked))
    check("runs_samples.json", get(client, reverse("compare:runs_samples") + picked))
    check("runs_empty.html", get(client, reverse("compare:runs")))


REPORT_FORMATS = ("html", "csv", "votes.csv", "json", "md")


def test_reports(client, golden):
    from webapp.reports import formats
    from webapp.reports.report import build_comparison_report, build_report

    owner, main, other = golden
    client.force_login(owner)
    for fmt in REPORT_FORMATS:
        check(f"report.{fmt}", get(client, reverse("reports:export", args=[main.pk, fmt])))
    check("report_step10.html", get(client, reverse("reports:export", args=[main.pk, "html"]) + "?step=10"))
    picked = "?run=8101,8104,8201,8202"
    for fmt in REPORT_FORMATS:
        check(f"runs_report.{fmt}", get(client, reverse("reports:runs_export", args=[fmt]) + picked))
    # The PDF is Chromium's print of this page (the bytes of a PDF carry its creation time).
    check("report_pdf_source.html", formats.to_html(build_report(main), pdf=True))
    runs = list(Run.objects.filter(pk__in=[8101, 8201]).select_related("experiment").order_by("pk"))
    check("runs_report_pdf_source.html", formats.to_html(build_comparison_report(runs), pdf=True))


def test_api_report(client, golden):
    owner, main, _ = golden
    client.force_login(owner)
    for fmt in ("json", "csv", "votes.csv", "md"):
        body = get(client, reverse("api:experiment_report", args=[main.pk, fmt]))
        check(f"report.{fmt}", body)  # the API sends the same bytes as the page's download
