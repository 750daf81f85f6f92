"""The one lifecycle of background jobs (webapp/experiments/jobs.py), on the io kinds: stored then saved (the
file removed when the row is not), claimed once per attempt, ended once, written once (an attempt that lost its
job writes nothing: one experiment, one dataset); and the resend of lost jobs: a queued job whose message was
lost is sent again on its own queue, a running job whose worker died is requeued, then failed after
PTLAB_MAX_ATTEMPTS starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from django.utils import timezone

from webapp.datasets.jobs import do_create_upload_job
from webapp.datasets.models import UploadJob
from webapp.experiments import jobs
from webapp.experiments.models import db_now
from webapp.reports.jobs import do_create_import_job, do_run_import_job
from webapp.reports.models import ImportJob

State = jobs.BackgroundJob.State


def upload(name: str = "report.json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b'{"not": "a report"}')


@pytest.fixture
def queue_empty(monkeypatch):
    """The io queue's length in the broker, as the resend sees it (0: empty; None: no broker)."""
    lengths = {"io": 0}
    monkeypatch.setattr(jobs, "queue_lengths", lambda names: {n: lengths.get(n) for n in names})
    return lengths


def later(seconds: float):
    return db_now() + timezone.timedelta(seconds=seconds)


def resend(seconds: float, django_capture_on_commit_callbacks) -> list[str]:
    with django_capture_on_commit_callbacks(execute=True):
        return jobs.do_resend_lost_jobs(now=later(seconds))


def test_a_job_is_claimed_once(bob, import_jobs_sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = do_create_import_job(bob, upload())
    assert import_jobs_sent == [job.pk]
    assert (job.state, job.sends, job.attempts, job.phase) == (State.QUEUED, 1, 0, "waiting for a worker")
    claimed = ImportJob.claim(job.pk, "reading the file", 10)
    assert (claimed.state, claimed.attempts, claimed.phase) == (State.RUNNING, 1, "reading the file")
    assert ImportJob.claim(job.pk, "reading the file", 10) is None  # a redelivered message
    assert do_run_import_job(job.pk) == "not queued"
    assert ImportJob.objects.get(pk=job.pk).attempts == 1


def test_a_failing_job_records_why_and_removes_its_file(bob):
    job = do_create_import_job(bob, upload())
    stored = job.file.path

    def broken(job):
        raise RuntimeError("a bug")

    assert jobs.run_job(ImportJob, job.pk, "reading the file", 10, broken) == State.FAILED
    job.refresh_from_db()
    assert (job.state, job.progress, job.message) == (State.FAILED, 100, ImportJob.SERVER_ERROR)
    assert not job.file and not Path(stored).exists()
    assert do_run_import_job(job.pk) == "not queued"  # an ended job is never run again


def test_a_row_that_is_not_saved_leaves_no_file(bob, monkeypatch, artifact_root, import_jobs_sent):
    def refused(*args, **kwargs):
        raise IntegrityError("refused")

    monkeypatch.setattr(ImportJob, "save", refused)
    with pytest.raises(IntegrityError):
        do_create_import_job(bob, upload())
    assert [p for p in artifact_root.rglob("*") if p.is_file()] == [] and import_jobs_sent == []


def test_an_attempt_that_lost_its_job_records_nothing(bob, settings):
    """The resend took the job for lost (requeued it) while its first attempt was still at work: that attempt's
    outcome is not written over the requeued job."""
    settings.PTLAB_REAP_AFTER_SECONDS = 60
    job = do_create_import_job(bob, upload())

    def slow(job):
        assert ImportJob.resend_lost(later(120), queue_empty=False)  # meanwhile its worker was taken for lost
        return State.DONE, "made", {}

    assert jobs.run_job(ImportJob, job.pk, "reading the file", 10, slow) == "lost"
    job.refresh_from_db()
    assert job.state == State.QUEUED and job.message.startswith("Its io worker was lost (attempt 1 of")


def test_a_running_job_beats(bob):
    job = ImportJob.claim(do_create_import_job(bob, upload()).pk, "reading the file", 10)
    ImportJob.objects.filter(pk=job.pk).update(updated=timezone.now() - timezone.timedelta(hours=1))
    assert job.beat() and (timezone.now() - ImportJob.objects.get(pk=job.pk).updated).total_seconds() < 60


@pytest.mark.parametrize("age, in_broker, resent", [(120, 0, True), (10, 0, False), (120, 2, False),
                                                    (120, None, False)])
def test_a_queued_job_whose_message_was_lost_is_sent_again(bob, settings, queue_empty, import_jobs_sent,
                                                           django_capture_on_commit_callbacks, age, in_broker,
                                                           resent):
    """Only when it has waited PTLAB_JOB_RESEND_SECONDS and no message waits in the io queue (nor when the
    broker does not answer: it is sent once it does)."""
    settings.PTLAB_JOB_RESEND_SECONDS = 60
    queue_empty["io"] = in_broker
    job = do_create_import_job(bob, upload())  # the broker was down: nothing was sent
    done = resend(age, django_capture_on_commit_callbacks)
    assert bool(done) == resent and import_jobs_sent == ([job.pk] if resent else [])
    job.refresh_from_db()
    assert job.state == State.QUEUED and (job.sends, job.phase) == (
        (2, "sent again (attempt 2)") if resent else (1, "waiting for a worker"))
    if resent:  # and not at the next tick, only after another PTLAB_JOB_RESEND_SECONDS
        assert resend(1, django_capture_on_commit_callbacks) == []
        assert resend(age + 120, django_capture_on_commit_callbacks) and job.pk in import_jobs_sent[1:]


def test_a_job_whose_worker_died_is_requeued_then_failed(alice_client, alice, settings, queue_empty,
                                                         upload_jobs_sent, django_capture_on_commit_callbacks):
    settings.PTLAB_REAP_AFTER_SECONDS, settings.PTLAB_MAX_ATTEMPTS, settings.PTLAB_JOB_RESEND_SECONDS = 60, 2, 600
    queue_empty["io"] = 3  # messages wait: a running job is sent again all the same
    job = do_create_upload_job(alice, "mine", "train", upload("data.jsonl"))
    stored = job.file.path
    UploadJob.claim(job.pk, "checking every row", 20)
    assert resend(30, django_capture_on_commit_callbacks) == []  # silent for less than the limit: alive

    assert resend(120, django_capture_on_commit_callbacks) == [
        f"upload job #{job.pk}: its io worker was lost: sent again"]
    job.refresh_from_db()
    assert (job.state, job.attempts, job.sends, job.phase) == (State.QUEUED, 1, 2, "sent again (attempt 2)")
    assert "Its io worker was lost (attempt 1 of 2); sent again." == job.message and upload_jobs_sent == [job.pk]
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert "sent again (attempt 2)" in page and "Its io worker was lost" in page

    UploadJob.claim(job.pk, "checking every row", 20)  # the second attempt's worker dies too
    assert resend(120, django_capture_on_commit_callbacks) == [
        f"upload job #{job.pk}: the io worker was lost 2 times: failed"]
    job.refresh_from_db()
    assert (job.state, job.message) == (State.FAILED, "The io worker was lost 2 times; nothing was saved.")
    assert not job.file and not Path(stored).exists() and upload_jobs_sent == [job.pk]
    status = alice_client.get(job.get_absolute_url(), HTTP_ACCEPT="application/json").json()
    assert status["finished"] and "lost 2 times" in status["message"]
