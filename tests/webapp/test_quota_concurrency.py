"""Quotas under concurrent creates, from threads with their own database connections against the real test
database (a SQLite file, or PostgreSQL on CI): every form has passed its checks before any is saved (the
race of check-then-act), and still exactly the allowed number of experiments is created; the others get
the quota's error."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from tests.webapp.conftest import form_data
from tests.webapp.reports_fixtures import make_report_experiment
from webapp.experiments.forms.experiment import ExperimentForm, limit_refusal
from webapp.experiments.models import Experiment, Run
from webapp.reports.importing import ReportError, do_import_report
from webapp.reports.report import build_report

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]
N = 6


@pytest.fixture(autouse=True)
def file_database():
    if connection.vendor == "sqlite" and ":memory:" in str(connection.settings_dict["NAME"]):
        pytest.skip("threads need a file database")


def create_at_once(user, data: dict, n: int = N) -> list:
    """n forms validated, then saved at the same moment (a barrier between); what each save returned."""
    forms = [ExperimentForm(dict(data), {}, user=user) for _ in range(n)]
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def job(k: int) -> None:
        try:
            assert forms[k].is_valid(), forms[k].errors
            barrier.wait(30)  # everyone has passed the checks before anyone creates
            results[k] = forms[k].save(owner=user)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=job, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    refused = [f for f, r in zip(forms, results, strict=True) if r is None]
    assert all(limit_refusal(f) for f in refused)
    return results


def test_concurrent_creates_at_the_hourly_limit(alice, settings):
    settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR = 3
    results = create_at_once(alice, form_data(methods=["sft"], seeds="1", rl_from_sft=None))
    assert sum(r is not None for r in results) == 3
    assert Experiment.objects.filter(owner=alice).count() == 3


def test_concurrent_creates_at_the_queued_runs_limit(alice, settings):
    settings.PTLAB_MAX_QUEUED_RUNS_PER_USER = 5
    results = create_at_once(alice, form_data(methods=["sft", "dpo"], seeds="1", rl_from_sft=None))
    assert sum(r is not None for r in results) == 2  # 2 runs each: 2 x 2 <= 5 < 3 x 2
    assert Run.objects.filter(experiment__owner=alice, state=Run.State.QUEUED).count() == 4


def test_concurrent_imports_at_the_hourly_limit(alice, bob, settings):
    doc = build_report(make_report_experiment(alice, [alice], steps=20, eval_every=10, votes=0))
    settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR = 2
    barrier = threading.Barrier(4)
    outcomes = []

    def job() -> None:
        try:
            barrier.wait(30)
            do_import_report(doc, bob)
            outcomes.append("imported")
        except ReportError as exc:
            outcomes.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcomes)[:2] == ["At most 2 new experiments per hour (PTLAB_MAX_EXPERIMENTS_PER_HOUR): you "
                                    "created 2 in the last hour. Try again later."] * 2
    assert outcomes.count("imported") == 2 and Experiment.objects.filter(owner=bob).count() == 2


def test_a_refusal_at_save_time_is_the_forms_limit_error_and_429_in_the_api(alice, alice_client, api, settings,
                                                                            monkeypatch):
    """What the losers of a race see: the form's checks passed (stood in for here), the locked check refuses."""
    from tests.webapp.test_hostile import NEW, error_of

    settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR = 0
    monkeypatch.setattr("webapp.experiments.forms.experiment.rate_refusal", lambda user: None)
    error = error_of(api.post("/api/experiments", NEW), 429)
    assert error["code"] == "limit_exceeded" and "PTLAB_MAX_EXPERIMENTS_PER_HOUR" in error["message"]
    response = alice_client.post("/experiments/new/", form_data(methods=["sft"], rl_from_sft=None))
    assert response.status_code == 200 and "PTLAB_MAX_EXPERIMENTS_PER_HOUR" in response.content.decode()
    assert not Experiment.objects.exists()
