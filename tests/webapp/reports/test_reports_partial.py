"""A report exported while runs still train says it is partial and shows each run's state; a finished
experiment's report says nothing of the kind."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.webapp.reports_fixtures import make_report_experiment
from webapp.experiments.models import Run

pytestmark = pytest.mark.django_db


def get(client, exp, fmt):
    return client.get(reverse("reports:export", args=[exp.pk, fmt])).content.decode()


def test_report_of_a_running_experiment_is_marked_partial(alice_client, alice):
    exp = make_report_experiment(alice, [alice], steps=20, votes=0)
    html, md = get(alice_client, exp, "html"), get(alice_client, exp, "md")
    assert "Partial" not in html and "Partial" not in md and "(partial)" not in html
    runs = list(exp.runs.order_by("id"))
    Run.objects.filter(pk=runs[0].pk).update(state=Run.State.RUNNING, step=12)
    Run.objects.filter(pk=runs[1].pk).update(state=Run.State.QUEUED, step=0)
    html, md = get(alice_client, exp, "html"), get(alice_client, exp, "md")
    n = len(runs)
    assert "ptlab report (partial)</title>" in html
    assert f"<b>Partial report</b>: 2 of {n} runs had not finished" in html
    assert "1 running" in html and "1 queued" in html
    assert f"**Partial**: 2 of {n} runs had not finished" in md
    assert f"{runs[0].label} running (step 12 of " in md and f"{runs[1].label} queued" in md
