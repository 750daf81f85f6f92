"""Report imports as background jobs: the request stores the file and a queued job (nothing imported yet);
the job runs queued -> running -> done with the experiment, or failed with the JSON path and nothing saved;
a duplicate delivery changes nothing; the job's page and its JSON are the owner's only."""

from __future__ import annotations

import json
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.webapp.reports_fixtures import make_report_experiment
from webapp.experiments.models import Experiment, Run
from webapp.reports.jobs import do_create_import_job, do_run_import_job
from webapp.reports.models import ImportJob
from webapp.reports.report import build_report


@pytest.fixture
def body(alice, bob):
    exp = make_report_experiment(alice, [bob], steps=20, eval_every=10, votes=6)
    doc = build_report(exp)
    doc["votes"] = [{**v, "rater": f"{v['rater']}-elsewhere"} for v in doc["votes"]]
    return json.dumps(doc).encode()


def upload(body: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("report.json", body, content_type="application/json")


def test_job_lifecycle(bob, body, import_jobs_sent, django_capture_on_commit_callbacks):
    before = Experiment.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        job = do_create_import_job(bob, upload(body))
    assert import_jobs_sent == [job.pk]  # sent once the row is committed
    job.refresh_from_db()
    assert (job.state, job.size, job.name) == ("queued", len(body), "report.json") and job.file
    stored = job.file.path
    assert Experiment.objects.count() == before  # nothing imported by the request

    assert do_run_import_job(job.pk) == "done"
    job.refresh_from_db()
    copy = Experiment.objects.get(owner=bob)
    assert (job.state, job.progress, job.experiment) == ("done", 100, copy)
    assert f"Imported \"{copy.name}\"" in job.message and copy.runs.count() == len(json.loads(body)["runs"])
    assert not job.file and not os.path.exists(stored)  # the upload is removed

    assert do_run_import_job(job.pk) == "not queued"  # a duplicate delivery: no second experiment
    assert Experiment.objects.filter(owner=bob).count() == 1


def test_the_page_posts_a_job_and_follows_it(client, bob, alice, body):
    client.force_login(bob)
    response = client.post(reverse("reports:import"), {"file": upload(body)})
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    page = client.get(job.get_absolute_url())
    assert page.status_code == 200 and 'data-finished="0"' in page.content.decode()
    status = client.get(job.get_absolute_url(), HTTP_ACCEPT="application/json").json()
    assert (status["state"], status["finished"], status["url"]) == ("queued", False, None)

    do_run_import_job(job.pk)
    status = client.get(job.get_absolute_url(), HTTP_ACCEPT="application/json").json()
    copy = Experiment.objects.get(owner=bob)
    assert (status["state"], status["progress"], status["url"]) == ("done", 100, copy.get_absolute_url())
    assert copy.get_absolute_url() in client.get(job.get_absolute_url()).content.decode()

    client.force_login(alice)  # another user's job: 404, like experiments
    assert client.get(job.get_absolute_url()).status_code == 404
    assert client.get(job.get_absolute_url(), HTTP_ACCEPT="application/json").status_code == 404


def test_a_bad_document_fails_the_job_with_its_json_path_and_saves_nothing(client, bob, body):
    doc = json.loads(body)
    doc["runs"][3]["seed"] = "two"
    client.force_login(bob)
    response = client.post(reverse("reports:import"), {"file": upload(json.dumps(doc).encode())})
    job = ImportJob.objects.get()
    before = (Experiment.objects.count(), Run.objects.count())
    assert do_run_import_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.state == "failed" and job.experiment is None
    assert "$.runs[3].seed" in job.message and "must be an integer" in job.message
    assert (Experiment.objects.count(), Run.objects.count()) == before
    assert not Experiment.objects.filter(owner=bob).exists()
    page = client.get(response["Location"]).content.decode()
    assert "$.runs[3].seed" in page and 'role="alert"' in page


def test_a_failure_in_the_write_leaves_nothing_half_saved(bob, body, monkeypatch):
    """The import is one transaction: an error after the runs were written takes them back too."""
    def broken(*args, **kwargs):
        raise ValueError("disk full")

    monkeypatch.setattr("webapp.reports.importing.Sample.objects.bulk_create", broken)
    job = do_create_import_job(bob, upload(body))
    assert do_run_import_job(job.pk) == "failed"
    assert "disk full" in ImportJob.objects.get(pk=job.pk).message
    assert not Experiment.objects.filter(owner=bob).exists() and not Run.objects.filter(experiment__owner=bob).exists()


def test_an_upload_over_the_byte_limit_makes_no_job(client, bob, body, settings):
    settings.PTLAB_MAX_IMPORT_BYTES = 1000
    client.force_login(bob)
    response = client.post(reverse("reports:import"), {"file": upload(body)})
    assert response.status_code == 200 and "at most 1000 bytes (PTLAB_MAX_IMPORT_BYTES)" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_the_hourly_quota_fails_the_job(bob, body, settings):
    settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR = 1
    first, second = (do_create_import_job(bob, upload(body)) for _ in range(2))
    assert do_run_import_job(first.pk) == "done"
    assert do_run_import_job(second.pk) == "failed"
    assert "PTLAB_MAX_EXPERIMENTS_PER_HOUR" in ImportJob.objects.get(pk=second.pk).message
    assert Experiment.objects.filter(owner=bob).count() == 1


def test_training_runs_never_go_to_the_io_queue(alice):
    from tests.webapp.conftest import form_data
    from webapp.experiments.forms.experiment import ExperimentForm

    form = ExperimentForm(form_data(queue="io"), {}, user=alice)
    assert not form.is_valid() and "for imports and uploads" in str(form.errors["queue"])
