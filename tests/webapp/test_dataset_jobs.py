"""Dataset uploads as jobs: a file over PTLAB_INLINE_UPLOAD_BYTES is stored with a queued job and checked by a
worker (done with the dataset, or failed naming the line and row, nothing saved); a small one runs the same job
in the request. The job's page and its JSON are the owner's only."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_datasets import ROWS, files_under, jsonl, upload

from webapp.datasets.jobs import do_run_upload_job
from webapp.datasets.models import Dataset, UploadJob


@pytest.fixture
def in_background(settings):
    settings.PTLAB_INLINE_UPLOAD_BYTES = 0


def test_upload_job_lifecycle(alice_client, alice, bob, client, in_background, upload_jobs_sent,
                              django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(alice_client, "data.jsonl", jsonl(ROWS))
    job = UploadJob.objects.get()
    assert response.status_code == 302 and response.url == job.get_absolute_url()
    assert upload_jobs_sent == [job.pk] and job.state == "queued" and not Dataset.objects.exists()
    status = alice_client.get(job.get_absolute_url(), HTTP_ACCEPT="application/json").json()
    assert (status["state"], status["url"]) == ("queued", None)
    assert 'data-finished="0"' in alice_client.get(job.get_absolute_url()).content.decode()

    assert do_run_upload_job(job.pk) == "done"
    assert do_run_upload_job(job.pk) == "not queued"  # a duplicate delivery changes nothing
    dataset = Dataset.objects.get()
    job.refresh_from_db()
    assert (job.state, job.progress, job.dataset) == ("done", 100, dataset)
    assert dataset.owner == alice and dataset.rows == 20 and Path(dataset.location()).is_file()
    assert dataset.mapping == {"prompt": "question", "completion": "response", "answer": "final_answer"}
    status = alice_client.get(job.get_absolute_url(), HTTP_ACCEPT="application/json").json()
    assert (status["state"], status["finished"], status["url"]) == ("done", True, dataset.get_absolute_url())

    client.force_login(bob)
    assert client.get(job.get_absolute_url()).status_code == 404


def test_a_bad_row_fails_the_job_naming_the_line_and_saves_nothing(alice_client, artifact_root, in_background):
    response = upload(alice_client, "bad.jsonl", b'{"prompt": "a"}\n\n{"prompt": \n')
    job = UploadJob.objects.get()
    assert do_run_upload_job(job.pk) == "failed"
    job.refresh_from_db()
    assert "line 3, row 1: not valid JSON" in job.message and job.dataset is None and not job.file
    assert not Dataset.objects.exists() and files_under(artifact_root) == []
    page = alice_client.get(response.url).content.decode()
    assert "line 3, row 1: not valid JSON" in page and 'role="alert"' in page


def test_a_small_upload_runs_its_job_in_the_request(alice_client, upload_jobs_sent):
    response = upload(alice_client, "data.jsonl", jsonl(ROWS))
    job = UploadJob.objects.get()
    assert response.url == Dataset.objects.get().get_absolute_url() and job.state == "done"
    assert upload_jobs_sent == []
    assert upload(alice_client, "bad.csv", b"prompt,answer\na,1\nb,2,3\n").status_code == 200
    assert UploadJob.objects.filter(state="failed").count() == 1 and Dataset.objects.count() == 1
