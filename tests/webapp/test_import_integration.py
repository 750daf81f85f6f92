"""A report import (and a dataset upload) done in the background by a real Celery worker on the io queue, from a real Redis broker:
the page's POST answers at once with the job's page, the worker imports the report (or fails the job with
the JSON path, saving nothing), and the job's page links the new experiment. The services are
test_integration's fixtures."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from test_integration import WorkerProcess, broker, queue, redis_url, wait_for  # noqa: F401  (fixtures)

from tests.webapp.reports_fixtures import make_report_experiment
from webapp.datasets.models import UploadJob
from webapp.experiments.models import Experiment, Run
from webapp.reports.models import ImportJob
from webapp.reports.report import build_report

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")  # the uploads' folder: the web side and the worker share it


@pytest.fixture(autouse=True)
def artifact_root(settings, shared_root):
    settings.ARTIFACT_ROOT = settings.MEDIA_ROOT = shared_root
    return shared_root


@pytest.fixture
def import_jobs_sent():
    """Overrides the unit tests' fake: here jobs really go to the broker."""
    return None


@pytest.fixture
def upload_jobs_sent():
    """Overrides the unit tests' fake: here jobs really go to the broker."""
    return None


@pytest.fixture(scope="module")
def io_worker(django_db_setup, django_db_blocker, broker, queue, shared_root, tmp_path_factory):  # noqa: F811
    proc = WorkerProcess("io", queue, broker, tmp_path_factory.mktemp("logs"),
                         env={"PTLAB_ARTIFACT_ROOT": str(shared_root), "PTLAB_PRELOAD_TRAINING": "0"})
    try:
        with django_db_blocker.unblock():
            proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def post(client, doc: dict):
    body = json.dumps(doc).encode()
    response = client.post(reverse("reports:import"), {"file": SimpleUploadedFile("report.json", body)})
    assert response.status_code == 302
    return ImportJob.objects.get(pk=response["Location"].rstrip("/").rsplit("/", 1)[1])


def finished(job):
    job.refresh_from_db()
    return job if job.finished else None


def report_to_import(django_user_model) -> tuple:
    """(bob, the report of alice's experiment), its votes by raters of another installation."""
    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    doc = build_report(make_report_experiment(alice, [bob], steps=20, eval_every=10, votes=6))
    doc["votes"] = [{**v, "rater": f"{v['rater']}-elsewhere"} for v in doc["votes"]]
    return bob, doc


def test_a_worker_imports_a_report_in_the_background(client, io_worker, queue, settings,  # noqa: F811
                                                     django_user_model):
    settings.PTLAB_IO_QUEUE = queue
    bob, doc = report_to_import(django_user_model)
    client.force_login(bob)

    job = post(client, doc)
    wait_for(lambda: finished(job), 60, "the import job", io_worker)
    copy = Experiment.objects.get(owner=bob)
    assert (job.state, job.progress, job.experiment_id) == ("done", 100, copy.pk), job.message
    assert copy.runs.count() == len(doc["runs"]) and not job.file
    status = client.get(job.get_absolute_url(), HTTP_ACCEPT="application/json").json()
    assert status["url"] == copy.get_absolute_url() and status["finished"]

    bad = {**doc, "runs": [*doc["runs"][:2], {**doc["runs"][2], "state": "running"}, *doc["runs"][3:]]}
    runs_before = Run.objects.count()
    job = post(client, bad)
    wait_for(lambda: finished(job), 60, "the failing import job", io_worker)
    assert job.state == "failed" and "$.runs[2].state" in job.message
    assert Experiment.objects.filter(owner=bob).count() == 1 and Run.objects.count() == runs_before
    assert "$.runs[2].state" in client.get(job.get_absolute_url()).content.decode()


def test_a_worker_checks_a_dataset_upload_in_the_background(client, io_worker, queue, settings,  # noqa: F811
                                                            django_user_model):
    settings.PTLAB_IO_QUEUE, settings.PTLAB_INLINE_UPLOAD_BYTES = queue, 0
    client.force_login(django_user_model.objects.create_user("carol"))
    rows = "".join(json.dumps({"prompt": f"{a} plus 1?", "completion": str(a + 1)}) + "\n" for a in range(30))
    response = client.post(reverse("datasets:new"), {"name": "mine", "split": "train",
                                                      "file": SimpleUploadedFile("d.jsonl", rows.encode())})
    job = UploadJob.objects.get()
    assert response.status_code == 302 and response.url == job.get_absolute_url()
    wait_for(lambda: finished(job), 60, "the upload job", io_worker)
    assert job.state == "done" and job.dataset.rows == 30, job.message
