"""A property of the report importer (issue 13): any document it accepts renders every page and every
export (but PDF, which prints the HTML export in Chromium: tests/webapp/test_reports_browser.py) with
status 200. Documents are a real report with one value somewhere replaced by arbitrary JSON."""

from __future__ import annotations

import copy

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webapp.experiments.models import Experiment
from webapp.ratings.demo import make_demo_experiment, simulate_votes
from webapp.reports.importing import ReportError, do_import_report
from webapp.reports.report import build_report

pytestmark = pytest.mark.django_db

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["", "sft", "succeeded", "running", "a", "tie", "base", "sft-s0", "dpo-s0", "2026-01-01T00:00:00"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


def paths(value, prefix=()):
    """Every path into a document (keys of objects, indexes of lists)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for n, v in enumerate(value[:3]):  # the first rows of long lists are enough
            yield from paths(v, (*prefix, n))


@pytest.fixture(scope="module")
def base_doc(django_db_blocker):
    from django.contrib.auth.models import User

    with django_db_blocker.unblock():
        owner = User.objects.create_user("report-source")
        exp = make_demo_experiment(owner, methods=("sft", "dpo"), prompts=2, steps=(0, 10))
        simulate_votes(exp, [owner], 4)
        doc = build_report(exp)
        exp.delete()
        owner.delete()
    for v in doc["votes"]:
        v["rater"] = "rater-elsewhere"
    return doc


def pages(exp: Experiment) -> list[str]:
    urls = [reverse("experiments:detail", args=[exp.pk]), reverse("experiments:status", args=[exp.pk]),
            reverse("experiments:clone", args=[exp.pk]), reverse("experiments:list"),
            reverse("compare:experiment", args=[exp.pk]), reverse("compare:experiment_data", args=[exp.pk]),
            reverse("compare:experiment_samples", args=[exp.pk]),
            reverse("ratings:rate", args=[exp.pk]), reverse("ratings:next", args=[exp.pk]),
            reverse("ratings:leaderboard", args=[exp.pk]), reverse("ratings:leaderboard_json", args=[exp.pk]),
            reverse("ratings:raters", args=[exp.pk]), reverse("ratings:index"),
            f"/api/experiments/{exp.pk}", f"/api/experiments/{exp.pk}/runs", f"/api/experiments/{exp.pk}/leaderboard"]
    urls += [reverse("reports:export", args=[exp.pk, fmt]) for fmt in ("html", "json", "csv", "votes.csv", "md")]
    ids = ",".join(str(r.pk) for r in exp.runs.all())
    urls += [f"{reverse('compare:runs')}?run={ids}", f"{reverse('compare:runs_data')}?run={ids}",
             f"{reverse('reports:runs_export', args=['json'])}?run={ids}"]
    for run in exp.runs.all():
        urls += [reverse("experiments:run", args=[run.pk]), f"/api/runs/{run.pk}", f"/api/runs/{run.pk}/metrics",
                 f"/api/runs/{run.pk}/samples"]
    return urls


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_any_accepted_import_renders_every_page_and_export(base_doc, alice, data, settings_override):
    doc = copy.deepcopy(base_doc)
    path = data.draw(st.sampled_from(list(paths(doc))[1:]))
    value = data.draw(JSON)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        exp = do_import_report(doc, alice)
    except ReportError:
        return  # refused before anything was written
    client = Client(raise_request_exception=True)
    client.force_login(alice)
    try:
        for url in pages(exp):
            response = client.get(url)
            assert response.status_code == 200, (url, path, value, response.content[:300])
    finally:
        exp.delete()


@pytest.fixture
def settings_override(settings):
    settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR = 10_000
