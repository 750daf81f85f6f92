"""A sweep for real: created over HTTP, 3 trials for each of 2 methods trained by a real Celery worker
on `tiny` through a real Redis broker, each trial proposed when the one before it ends; the compare page
then states best-of-budget and the winners' verdict, chosen on the validation half of the eval prompts
and reported on the other half. (The services and fixtures are test_integration's.)"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.webapp.test_integration import (  # noqa: F401  (fixtures)
    SMALL,
    WAIT,
    artifact_root,
    broker,
    browser,
    enqueued,
    queue,
    redis_url,
    wait_for,
    worker,
)
from webapp.experiments.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def test_a_sweep_of_three_trials_per_method_through_real_workers(browser, worker, queue):  # noqa: F811
    exp = browser.create_experiment(name="sweep", methods=["dpo", "ppo"], rl_from_sft=None, queue=queue,
                                    sweep_trials="3", sweep_sampler="random",
                                    **{**SMALL, "eval_prompts": "4", "eval_samples": "2"})

    def all_done():
        runs = list(exp.runs.all())
        return runs if len(runs) == 6 and all(not r.is_active for r in runs) else None

    runs = wait_for(all_done, 3 * WAIT, "six trials to finish", worker)
    assert sorted((r.method, r.trial) for r in runs) == [("dpo", 0), ("dpo", 1), ("dpo", 2),
                                                         ("ppo", 0), ("ppo", 1), ("ppo", 2)]
    assert all(r.state == Run.State.SUCCEEDED for r in runs), [r.error for r in runs]
    for method in ("dpo", "ppo"):  # one after another, each with its own settings
        trials = sorted((r for r in runs if r.method == method), key=lambda r: r.trial)
        assert all(a.finished_at <= b.started_at for a, b in zip(trials, trials[1:], strict=False))
        assert len({r.config["learning_rate"] for r in trials}) == 3
    _, html = browser.get(reverse("compare:experiment", args=[exp.pk]))
    assert "Equal tuning budget" in html
    assert re.search(r"validation half of the eval prompts \(2\).*other half \(2\)", html, re.S)
    section = html[html.index('id="sweep"'):html.index('id="equal-kl"')]
    assert ("beats" in section) or ("cannot be told apart" in section)
