"""A report import followed in a real browser, under the pages' Content-Security-Policy: the job's page shows
it queued, its script polls until the job (run a moment later, as a worker would) is done and then shows the
link to the experiment; a bad report ends failed with its JSON path on the page. No CSP violation."""

from __future__ import annotations

import json
import re
import threading

import pytest
from django.db import connections

from tests.e2e.test_csp import LISTEN
from tests.webapp.reports_fixtures import make_report_experiment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-import-12345"


@pytest.fixture
def worker_later(monkeypatch):
    """Instead of a broker and a worker: run the job in a thread 1.5 s after it is sent."""
    from webapp.reports.jobs import do_run_import_job

    def run(job_id: int) -> None:
        try:
            do_run_import_job(job_id)
        finally:
            connections.close_all()

    monkeypatch.setattr("webapp.experiments.actions.send_to_workers", lambda *a, **kw: None)
    monkeypatch.setattr("webapp.experiments.jobs.send_job",
                        lambda task, queue, job_id: threading.Timer(1.5, run, args=(job_id,)).start())


def test_the_job_page_follows_an_import(live_server, strict_page, django_user_model, worker_later, tmp_path,
                                       artifact_root):
    from webapp.experiments.models import Experiment
    from webapp.reports.models import ImportJob
    from webapp.reports.report import build_report

    page = strict_page
    user = django_user_model.objects.create_user("importer", password=PASSWORD)
    other = django_user_model.objects.create_user("colleague")
    doc = build_report(make_report_experiment(other, [other], steps=20, eval_every=10, votes=4))
    doc["votes"] = [{**v, "rater": f"{v['rater']}-elsewhere"} for v in doc["votes"]]
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(doc))
    bad.write_text(json.dumps({**doc, "runs": [{**doc["runs"][0], "seed": -3}, *doc["runs"][1:]]}))

    page.add_init_script(f"({LISTEN})()")
    base = live_server.url
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", "importer")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base + "/")

    violations = []
    for path, state in ((good, "done"), (bad, "failed")):
        page.goto(base + "/reports/import/")
        page.set_input_files("#id_file", str(path))
        page.click("button:has-text('Import')")
        page.wait_for_url(re.compile(r".*/reports/imports/\d+/$"))
        assert page.inner_text("[data-field='state']") in ("queued", "running")
        page.wait_for_selector(f"#job [data-field='state'].{state}", timeout=30_000)  # polled to the end
        violations += page.evaluate("window.__csp || []")
    assert page.inner_text("[data-field='message']").startswith("$.runs[0].seed: must be between 0")
    assert page.is_hidden("[data-field='result']")

    assert not violations, violations

    copy, job = Experiment.objects.get(owner=user), ImportJob.objects.get(state="done")
    page.goto(base + job.get_absolute_url())  # loaded finished: the link is there, nothing polls
    page.click("[data-field='link']")
    page.wait_for_url(base + copy.get_absolute_url())
