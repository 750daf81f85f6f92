"""Attempt fencing (issue 12) without a worker: an attempt that lost its run writes nothing, a fresh start
forgets earlier rows, duplicates are refused by the database, the pool child kills a process whose run went
elsewhere or that hangs, reaping uses the database's clock, resume, imported runs, the broker down."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from training.callbacks import Sample as TrainingSample
from webapp.api.models import ApiToken
from webapp.experiments import actions
from webapp.experiments.actions import NotResumable, do_resume_run
from webapp.experiments.models import Metric, Run, Sample, db_now
from webapp.workers.execution import RunWatch
from webapp.workers.fresh_process import ProcessDied, call_in_fresh_process
from webapp.workers.recovery import do_reap
from webapp.workers.sink import DatabaseSink

pytestmark = pytest.mark.django_db
State = Run.State
SEND_TO_WORKERS = actions.send_to_workers  # the real one (the unit tests' autouse fixture replaces it)


@pytest.fixture
def run(alice, make_experiment):
    return make_experiment(alice, methods=["sft"]).runs.get()


def claimed(run: Run, task_id: str = "task-1") -> Run:
    return Run.objects.claim(run.pk, "w1@host", task_id)


# --- the sink ---------------------------------------------------------------------------------------------

def test_an_attempt_that_lost_its_run_writes_nothing(run, tmp_path):
    old = DatabaseSink(claimed(run))
    old.log_metrics(0, {"eval/reward": 0.1})
    Run.objects.filter(pk=run.pk).update(state=State.QUEUED)  # reaped...
    new = DatabaseSink(claimed(run, "task-2"))  # ...and claimed again by another worker
    new.truncate_after(-1)  # a fresh start (no checkpoint yet): the earlier attempt's rows go
    new.log_metrics(0, {"eval/reward": 0.2})
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "weights").write_text("old attempt")
    target = tmp_path / "model"

    old.log_metrics(1, {"train/loss": 1.0})
    old.log_samples(1, [TrainingSample(1, "p", "c", 1.0)])
    assert old.publish(staged, target) is False
    old.truncate_after(-1)

    assert old.lost and old.should_stop()
    assert list(Metric.objects.filter(run=run).values_list("step", "name", "value")) == [(0, "eval/reward", 0.2)]
    assert not Sample.objects.filter(run=run).exists()
    assert not target.exists() and (staged / "weights").exists()  # nothing published


def test_a_held_attempt_publishes_a_folder_by_rename(run, tmp_path):
    sink = DatabaseSink(claimed(run))
    target = tmp_path / "checkpoints" / "checkpoint-4"
    for content in ("first", "second"):
        staged = tmp_path / f"staged-{content}"
        staged.mkdir()
        (staged / "weights").write_text(content)
        assert sink.publish(staged, target)
        assert (target / "weights").read_text() == content and not staged.exists()
    assert [p.name for p in target.parent.iterdir()] == ["checkpoint-4"]  # the replaced one is gone


def test_a_fresh_start_forgets_every_row_and_a_resume_those_after_its_checkpoint(run):
    sink = DatabaseSink(claimed(run))
    for step in (0, 2, 4):
        sink.log_metrics(step, {"eval/reward": step / 10})
        sink.log_samples(step, [TrainingSample(step, "p", "c", 1.0)])
    sink.truncate_after(2)
    assert sorted(Metric.objects.filter(run=run).values_list("step", flat=True)) == [0, 2]
    assert Run.objects.get(pk=run.pk).latest == {"eval/reward": 0.2, "step": 2}
    sink.truncate_after(-1)
    assert not Metric.objects.filter(run=run).exists() and not Sample.objects.filter(run=run).exists()


def test_a_completion_with_nul_is_stored_on_every_database(run):
    # A tiny model's sampled byte token decoded to NUL: PostgreSQL refused the write and the PPO run failed.
    sink = DatabaseSink(claimed(run))
    sink.log_samples(1, [TrainingSample(1, "p\x00", "a\x00b", 1.0)])
    sink.note("saw \x00 here")
    assert list(Sample.objects.filter(run=run).values_list("prompt", "completion")) == [("p\ufffd", "a\ufffdb")]
    assert not sink.lost and "saw \ufffd here" in Run.objects.get(pk=run.pk).log


def test_the_database_refuses_a_duplicate_point_or_sample(run):
    Metric.objects.create(run=run, step=3, name="train/loss", value=1.0, wall_time=0.0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Metric.objects.create(run=run, step=3, name="train/loss", value=2.0, wall_time=1.0)
    Sample.objects.create(run=run, step=3, prompt_id=1, index=0, prompt="p", completion="c", reward=0.0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Sample.objects.create(run=run, step=3, prompt_id=1, index=0, prompt="p", completion="d", reward=1.0)


# --- the pool child's watch -------------------------------------------------------------------------------

def test_the_watch_kills_only_when_the_run_went_elsewhere_or_hangs(run, settings):
    settings.PTLAB_HUNG_AFTER_SECONDS = 60
    watch = RunWatch(run.pk, "task-1")
    assert watch() is None  # not claimed yet: its process is still starting
    claimed(run)
    assert watch() is None
    Run.objects.filter(pk=run.pk).update(progress_at=db_now() - timezone.timedelta(seconds=61))
    assert "no progress for 6" in watch()
    Run.objects.filter(pk=run.pk).update(state=State.QUEUED, progress_at=db_now())
    assert "requeued" in watch()
    settings.PTLAB_REAP_AFTER_SECONDS = 10
    Run.objects.filter(pk=run.pk).update(state=State.RUNNING, heartbeat_at=db_now() - timezone.timedelta(seconds=15))
    assert watch() is None  # silent: the reaper's to act on first
    Run.objects.filter(pk=run.pk).update(heartbeat_at=db_now() - timezone.timedelta(seconds=21))
    assert "no heartbeat for 2" in watch()  # the reaper could not (a row locked mid-write): kill it
    Run.objects.filter(pk=run.pk).update(state=State.RUNNING, task_id="task-2", heartbeat_at=db_now())
    assert "another attempt" in watch()
    mine = RunWatch(run.pk, "task-2")
    Run.objects.filter(pk=run.pk).update(state=State.SUCCEEDED)
    assert mine() is None  # its own run ended: it is exiting
    mine.ended_at -= mine.finish_grace_s + 1
    assert "did not exit" in mine()


def hang() -> str:
    time.sleep(3600)
    return "never"


def test_a_process_the_watch_condemns_is_killed_even_when_stopped():
    calls = []

    def watch():
        calls.append(time.monotonic())
        if len(calls) == 1:
            os.kill(children[0], signal.SIGSTOP)  # stopped: its heartbeat thread would be silent too
        return "it made no progress" if len(calls) >= 3 else None

    import webapp.workers.fresh_process as fp

    children = []
    real_fork = os.fork

    def fork():
        pid = real_fork()
        if pid:
            children.append(pid)
        return pid

    fp.os.fork = fork
    try:
        t0 = time.monotonic()
        with pytest.raises(ProcessDied) as died:
            call_in_fresh_process(hang, watch=watch, watch_every=0.1)
    finally:
        fp.os.fork = real_fork
    assert died.value.killed_by_watch and str(died.value) == "it made no progress"
    assert died.value.signal == signal.SIGKILL and time.monotonic() - t0 < 30
    with pytest.raises(ProcessLookupError):
        os.kill(children[0], 0)  # gone, and reaped


def test_a_watched_process_returns_at_once_when_it_ends():
    t0 = time.monotonic()
    assert call_in_fresh_process(str, "done", watch=lambda: None, watch_every=30) == "done"
    assert time.monotonic() - t0 < 10  # not after the 30 s watch interval


# --- clocks -----------------------------------------------------------------------------------------------

def test_a_reaper_whose_clock_runs_ahead_reaps_no_live_run(run, settings, monkeypatch):
    settings.PTLAB_REAP_AFTER_SECONDS = 10
    claimed(run)  # heartbeat written with the database's clock
    ahead = timezone.now() + timezone.timedelta(seconds=120)
    monkeypatch.setattr(timezone, "now", lambda: ahead)
    assert do_reap() == []
    assert Run.objects.get(pk=run.pk).state == State.RUNNING


def test_heartbeats_are_written_with_the_database_clock(run):
    before = db_now()
    sink = DatabaseSink(claimed(run))
    sink.note("x")
    row = Run.objects.get(pk=run.pk)
    assert before - timezone.timedelta(seconds=1) <= row.heartbeat_at <= db_now()
    assert before - timezone.timedelta(seconds=1) <= row.progress_at <= db_now()


# --- resume -----------------------------------------------------------------------------------------------

def test_a_failed_run_resumes_ahead_of_the_queue_with_its_metrics(alice, make_experiment, settings, enqueued,
                                                                  django_capture_on_commit_callbacks):
    exp = make_experiment(alice, methods=["sft", "dpo"], rl_from_sft=True)
    sft, dpo = exp.runs.get(method="sft"), exp.runs.get(method="dpo")
    Metric.objects.create(run=sft, step=2, name="eval/reward", value=0.3, wall_time=0.0)
    Run.objects.filter(pk=sft.pk).update(state=State.FAILED, attempts=settings.PTLAB_MAX_ATTEMPTS, error="boom")
    Run.objects.filter(pk=dpo.pk).update(state=State.FAILED, error="SFT failed")  # as its SFT run's end does
    with django_capture_on_commit_callbacks(execute=True):
        resumed = do_resume_run(sft, by="alice")
    assert resumed.state == State.QUEUED and resumed.error == "" and "resumed by alice" in resumed.log
    assert resumed.attempts_before_resume == settings.PTLAB_MAX_ATTEMPTS  # the full limit again
    assert Metric.objects.filter(run=sft).count() == 1  # kept: it resumes from its checkpoint
    assert enqueued == [(sft.pk, "train")]
    assert Run.objects.get(pk=dpo.pk).state == State.WAITING
    with pytest.raises(NotResumable, match="this one is queued"):
        do_resume_run(sft)


def test_a_run_waiting_on_a_failed_run_cannot_resume_before_it(alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "dpo"], rl_from_sft=True)
    Run.objects.filter(experiment=exp).update(state=State.FAILED)
    with pytest.raises(NotResumable, match="resume that one first"):
        do_resume_run(exp.runs.get(method="dpo"))


def test_resume_over_the_api_and_the_page_is_for_the_owner_only(alice, bob, run, client):
    from django.test import Client

    Run.objects.filter(pk=run.pk).update(state=State.CANCELLED)
    token = ApiToken.issue(bob, "t")[1]
    r = Client().post(f"/api/runs/{run.pk}/resume", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 404
    client.force_login(bob)
    assert client.post(f"/runs/{run.pk}/resume/").status_code == 404
    token = ApiToken.issue(alice, "t")[1]
    r = Client().post(f"/api/runs/{run.pk}/resume", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 200 and r.json()["state"] == "queued"
    r = Client().post(f"/api/runs/{run.pk}/resume", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_resumable"
    Run.objects.filter(pk=run.pk).update(state=State.FAILED)
    client.force_login(alice)
    page = client.get(f"/runs/{run.pk}/")
    assert b"Resume run" in page.content
    assert client.post(f"/runs/{run.pk}/resume/").status_code == 302
    assert Run.objects.get(pk=run.pk).state == State.QUEUED


# --- imported runs, the broker down -----------------------------------------------------------------------

def test_runs_of_an_imported_experiment_are_never_claimed_or_reaped(run, settings):
    run.experiment.imported = True
    run.experiment.save(update_fields=["imported"])
    assert claimed(run) is None
    Run.objects.filter(pk=run.pk).update(state=State.RUNNING, heartbeat_at=db_now() - timezone.timedelta(days=1))
    assert do_reap() == [] and Run.objects.get(pk=run.pk).state == State.RUNNING
    with pytest.raises(NotResumable):
        do_resume_run(run)


@pytest.mark.django_db(transaction=True)
def test_creating_an_experiment_with_the_broker_down_keeps_it_queued(alice_client, settings, monkeypatch, caplog):
    from tests.celery_broker import celery_app_on
    from tests.webapp.conftest import form_data

    monkeypatch.setattr(actions, "send_to_workers", SEND_TO_WORKERS)  # really publish...
    with celery_app_on("redis://127.0.0.1:9/0"), caplog.at_level(logging.WARNING):  # ...to a closed port
        r = alice_client.post("/experiments/new/", form_data(name="offline"))
    assert r.status_code == 302
    sft = Run.objects.get(experiment__name="offline", method="sft")  # the others wait for it
    assert sft.state == State.QUEUED and sft.queued_at is not None
    assert "broker is unavailable" in caplog.text


def test_db_now_is_an_aware_utc_time_close_to_this_hosts():
    assert abs((db_now() - timezone.now()).total_seconds()) < 5


@pytest.mark.django_db(transaction=True)
def test_the_api_creates_an_experiment_with_the_broker_down_once(alice, monkeypatch):
    import json

    from django.test import Client

    from tests.celery_broker import celery_app_on

    monkeypatch.setattr(actions, "send_to_workers", SEND_TO_WORKERS)
    token = ApiToken.issue(alice, "t")[1]
    body = {"name": "offline api", "task": "arithmetic", "methods": ["sft"], "max_steps": 4, "eval_every": 2}
    with celery_app_on("redis://127.0.0.1:9/0"):
        r = Client().post("/api/experiments", json.dumps(body), content_type="application/json",
                          HTTP_AUTHORIZATION=f"Bearer {token}")
    assert r.status_code == 201, r.content  # not a 500 after the save, which a client would retry
    assert Run.objects.get(experiment__name="offline api").state == State.QUEUED


@pytest.mark.django_db(transaction=True)
def test_the_reaper_skips_a_run_whose_row_a_stopped_writer_holds(run, settings):
    """A run process stopped inside its write transaction keeps the run's row locked: the reaper leaves that
    run after a short wait instead of waiting on it forever (which stalled every worker's supervisor)."""
    import threading

    from django.db import connection

    from webapp.workers import recovery

    if connection.vendor != "postgresql":
        pytest.skip("row locks with a lock timeout: PostgreSQL (CI runs the suite on it)")
    settings.PTLAB_REAP_AFTER_SECONDS = 10
    claimed(run)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=db_now() - timezone.timedelta(seconds=60))
    locked, release = threading.Event(), threading.Event()

    def stopped_writer():  # holds the row like DatabaseSink._while_held in a stopped process
        from django.db import connection as own

        with transaction.atomic():
            Run.objects.filter(pk=run.pk).update(progress_at=db_now())
            locked.set()
            release.wait(30)
        own.close()

    holder = threading.Thread(target=stopped_writer)
    holder.start()
    try:
        assert locked.wait(10)
        t0 = time.monotonic()
        assert recovery.do_reap() == []
        assert time.monotonic() - t0 < recovery.LOCK_WAIT_S + 5
    finally:
        release.set()
        holder.join()
    assert Run.objects.get(pk=run.pk).state == State.RUNNING
    assert len(recovery.do_reap()) == 1  # once the row is free, the silent run is requeued
