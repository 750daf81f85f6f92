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


def requeued_and_run_again(model, run_again):
    """A `set_phase`/check wrapper's work: the resend takes attempt 1 for lost (its heartbeat stalled, say) and
    attempt 2 claims the job and runs it to the end, all before attempt 1 writes."""
    assert model.resend_lost(later(120), queue_empty=False)
    assert run_again() == State.DONE


def test_an_import_attempt_that_lost_its_job_writes_nothing(alice, bob, settings, monkeypatch, import_jobs_sent):
    """Exactly once: attempt 1 is requeued while it checks the document, attempt 2 imports it; then attempt 1
    comes to its write, which finds the job no longer its own and writes no second experiment."""
    from tests.webapp.reports_fixtures import make_report_experiment
    from webapp.experiments.models import Experiment
    from webapp.reports.report import build_report

    settings.PTLAB_REAP_AFTER_SECONDS = 60
    doc = build_report(make_report_experiment(alice, [alice], steps=20, eval_every=10, votes=2))
    doc["votes"] = [{**v, "rater": f"{v['rater']}-elsewhere"} for v in doc["votes"]]
    job = do_create_import_job(bob, SimpleUploadedFile("report.json", jobs_json(doc)))
    set_phase = ImportJob.set_phase

    def stalled(self, phase, progress, **fields):
        held = set_phase(self, phase, progress, **fields)
        if phase == "writing the experiment" and self.attempts == 1:
            requeued_and_run_again(ImportJob, lambda: do_run_import_job(job.pk))
        return held

    monkeypatch.setattr(ImportJob, "set_phase", stalled)
    assert do_run_import_job(job.pk) == "lost"  # attempt 1
    job.refresh_from_db()
    [made] = Experiment.objects.filter(owner=bob)
    assert (job.state, job.attempts, job.experiment) == (State.DONE, 2, made)
    assert job.message == f"Imported \"{made.name}\" with {made.runs.count()} runs." and not job.file


def test_an_upload_attempt_that_lost_its_job_saves_nothing(alice, monkeypatch, settings, upload_jobs_sent):
    from webapp.datasets import jobs as upload_jobs
    from webapp.datasets.models import Dataset

    settings.PTLAB_REAP_AFTER_SECONDS = 60
    job = do_create_upload_job(alice, "mine", "train", SimpleUploadedFile(
        "d.jsonl", b'{"prompt": "1 plus 1?", "completion": "2"}\n{"prompt": "2 plus 1?", "completion": "3"}\n'))
    check = upload_jobs.check_dataset

    def stalled(dataset):
        check(dataset)
        if UploadJob.objects.get(pk=job.pk).attempts == 1:
            requeued_and_run_again(UploadJob, lambda: upload_jobs.do_run_upload_job(job.pk))

    monkeypatch.setattr(upload_jobs, "check_dataset", stalled)
    assert upload_jobs.do_run_upload_job(job.pk) == "lost"  # attempt 1
    job.refresh_from_db()
    [made] = Dataset.objects.filter(owner=alice)
    assert (job.state, job.attempts, job.dataset, made.rows) == (State.DONE, 2, made, 2)
    assert made.file.name == job.file.name and Path(made.file.path).exists()  # the lost attempt left it


def test_each_kind_is_resent_on_its_own_queue_while_that_queue_is_empty(bob, settings, queue_empty, monkeypatch,
                                                                        django_capture_on_commit_callbacks):
    """An import (queue io) and a judge job (queue try) whose messages were lost: each is sent again to its own
    queue, and only when that queue is empty; a worker resends only the kinds of the queues it serves."""
    from webapp.ratings.demo import make_demo_experiment
    from webapp.ratings.models import JudgeJob

    settings.PTLAB_JOB_RESEND_SECONDS = 60
    sent = []
    monkeypatch.setattr(jobs, "send_job", lambda task, queue, job_id: sent.append((task, queue, job_id)))
    imported = do_create_import_job(bob, upload())
    judged = JudgeJob.create_queued(experiment=make_demo_experiment(bob, methods=("sft",), prompts=1, steps=(0,)),
                                    requested_by=bob, model="tiny")
    sent.clear()  # both messages lost

    queue_empty.update({"io": 0, "try": 4})  # messages wait on `try`: the judge job's may be among them
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.do_resend_lost_jobs(["try"], now=later(120)) == []  # a `try` worker: not the import
        assert len(jobs.do_resend_lost_jobs(["io", "try"], now=later(120))) == 1
    assert sent == [(ImportJob.TASK, "io", imported.pk)]

    queue_empty.update({"io": 3, "try": 0})
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.do_resend_lost_jobs(["io"], now=later(240)) == []
        assert jobs.do_resend_lost_jobs(["try"], now=later(240)) == [
            f"judge job #{judged.pk}: its message was lost: sent again"]
    assert sent[1:] == [(JudgeJob.TASK, "try", judged.pk)]
    judged.refresh_from_db()
    assert (judged.state, judged.sends, judged.phase) == (State.QUEUED, 2, "sent again (attempt 2)")


def jobs_json(doc) -> bytes:
    import json

    return json.dumps(doc).encode()
