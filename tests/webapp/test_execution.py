"""Executing runs without a broker: the claim, outcomes, dependents, the sink, cancel, the reaper.
The trainer is replaced by a fake that talks to the sink like training.runner does."""

from types import SimpleNamespace

import pytest
from django.utils import timezone

from training.callbacks import Progress
from training.callbacks import Sample as TrainingSample
from training.models import ModelLoadError
from webapp.experiments import actions
from webapp.experiments.actions import do_cancel_experiment, do_cancel_run
from webapp.experiments.models import Metric, Run, Sample, Worker
from webapp.workers import execution, recovery
from webapp.workers.execution import execute
from webapp.workers.recovery import do_reap
from webapp.workers.sink import DatabaseSink

pytestmark = pytest.mark.django_db
State = Run.State


@pytest.fixture(autouse=True)
def quiet_heartbeat(settings):
    settings.PTLAB_HEARTBEAT_SECONDS = 3600  # the thread's own connection would wait on the test's transaction


def fake_training(steps=3, stop_at=None, fail=None):
    """A stand-in for training.runner.run: progress, metrics, an evaluation with samples."""

    def train(run, sink):
        if fail:
            raise fail
        sink.truncate_after(-1)  # as the runner does on a start without a checkpoint
        sink.progress(Progress(0, steps, "loading", 0.0, None))
        for step in range(1, steps + 1):
            sink.log_metrics(step, {"train/loss": 1.0 / step})
            sink.progress(Progress(step, steps, "training", float(step), float(steps - step)))
            if sink.should_stop() or step == stop_at:
                return SimpleNamespace(step=step, stopped=True, seconds=1.0)
        sink.log_metrics(steps, {"eval/reward": 0.5, "eval/kl": 0.25})
        sink.log_samples(steps, [TrainingSample(steps, "<b>2+2?</b>", "<script>x</script>", 1.0, 0, 0)])
        return SimpleNamespace(step=steps, stopped=False, seconds=1.0)

    return train


@pytest.fixture
def sft_then_dpo(alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "dpo"], rl_from_sft=True)
    return exp.runs.get(method="sft"), exp.runs.get(method="dpo")


def test_a_run_trains_and_its_dependents_are_released(monkeypatch, sft_then_dpo, enqueued,
                                                      django_capture_on_commit_callbacks):
    sft, dpo = sft_then_dpo
    monkeypatch.setattr(execution, "_train", fake_training())
    with django_capture_on_commit_callbacks(execute=True):
        assert execute(sft.pk, "w1@host", "task-1") == State.SUCCEEDED
    sft.refresh_from_db()
    assert sft.state == State.SUCCEEDED and sft.attempts == 1 and sft.claimed_by == "w1@host"
    assert sft.step == 3 and sft.latest["eval/reward"] == 0.5 and sft.finished_at
    assert Metric.objects.filter(run=sft).count() == 5 and Sample.objects.filter(run=sft).count() == 1
    assert "finished in" in sft.log
    dpo.refresh_from_db()
    model = str(sft.model_dir)
    assert dpo.state == State.QUEUED and dpo.config["model"] == model and dpo.config["reference_model"] == model
    assert enqueued == [(dpo.pk, "train")]
    assert Worker.objects.get(hostname="w1@host").current_run is None


def test_a_second_delivery_never_trains_again(monkeypatch, sft_then_dpo):
    sft, _ = sft_then_dpo
    calls = []
    monkeypatch.setattr(execution, "_train", lambda run, sink: calls.append(run) or fake_training()(run, sink))
    assert execute(sft.pk, "w1", "t1") == State.SUCCEEDED
    assert execute(sft.pk, "w2", "t1") == "skipped"
    assert len(calls) == 1 and Run.objects.get(pk=sft.pk).attempts == 1


def test_claim_is_conditional(sft_then_dpo):
    sft, dpo = sft_then_dpo
    assert Run.objects.claim(dpo.pk, "w", "t") is None  # waiting, not queued
    assert Run.objects.claim(sft.pk, "w", "t").state == State.RUNNING
    assert Run.objects.claim(sft.pk, "w2", "t2") is None


def test_unknown_model_fails_readably_and_fails_dependents(monkeypatch, sft_then_dpo):
    sft, dpo = sft_then_dpo
    error = ModelLoadError("could not load model 'nope': it is not 'tiny', 'demo' or an existing folder")
    monkeypatch.setattr(execution, "_train", fake_training(fail=error))
    assert execute(sft.pk, "w", "t") == State.FAILED
    sft.refresh_from_db()
    assert sft.error.startswith("could not load model 'nope'") and "Traceback" in sft.traceback
    dpo.refresh_from_db()
    assert dpo.state == State.FAILED and "SFT seed 0" in dpo.error and "failed" in dpo.error


def test_any_exception_fails_the_run_with_its_type(monkeypatch, alice, make_experiment):
    run = make_experiment(alice).runs.get()
    monkeypatch.setattr(execution, "_train", fake_training(fail=RuntimeError("CUDA out of memory")))
    execute(run.pk, "w", "t")
    assert Run.objects.get(pk=run.pk).error == "RuntimeError: CUDA out of memory"


def test_cancel_of_queued_and_waiting_runs_is_immediate(sft_then_dpo):
    sft, dpo = sft_then_dpo
    do_cancel_run(dpo, by="alice")
    assert Run.objects.get(pk=dpo.pk).state == State.CANCELLED
    do_cancel_run(sft)
    assert Run.objects.get(pk=sft.pk).state == State.CANCELLED
    assert execute(sft.pk, "w", "t") == "skipped"  # its message, still in the queue, is ignored


def test_a_lost_database_connection_ends_the_attempt_without_failing_the_run(monkeypatch, alice, make_experiment):
    """A database restart mid-run is not the run's fault: the process ends with the error (its worker then
    requeues the run, see ProcessDied) and the run is not failed."""
    from django.db import OperationalError

    run = make_experiment(alice).runs.get()
    monkeypatch.setattr(execution, "_train", fake_training(fail=OperationalError("terminating connection")))
    with pytest.raises(OperationalError):
        execute(run.pk, "w", "t")
    run.refresh_from_db()
    assert run.state == State.RUNNING and run.error == ""


def test_cancelling_sft_fails_its_waiting_dependents(sft_then_dpo):
    sft, dpo = sft_then_dpo
    do_cancel_run(sft)
    dpo.refresh_from_db()
    assert dpo.state == State.FAILED and "cancelled" in dpo.error


def test_cancel_experiment_cancels_every_run(sft_then_dpo):
    sft, dpo = sft_then_dpo
    do_cancel_experiment(sft.experiment)
    assert set(Run.objects.values_list("state", flat=True)) == {State.CANCELLED}


def test_a_running_run_stops_cleanly_and_keeps_its_metrics(monkeypatch, alice, make_experiment):
    run = make_experiment(alice).runs.get()

    def train(run_, sink):
        sink.log_metrics(1, {"train/loss": 1.0})
        do_cancel_run(Run.objects.get(pk=run_.pk), by="alice")  # the user presses Cancel mid-run
        assert Run.objects.get(pk=run_.pk).stop_requested
        sink._last_check = -1e9
        assert sink.should_stop()
        return SimpleNamespace(step=1, stopped=True, seconds=0.5)

    monkeypatch.setattr(execution, "_train", train)
    assert execute(run.pk, "w", "t") == State.CANCELLED
    run.refresh_from_db()
    assert run.state == State.CANCELLED and Metric.objects.filter(run=run).count() == 1
    assert "stop requested" in run.log and "stopped at step 1" in run.log


def running(run, attempts=1, silent_for=0.0, **fields):
    Run.objects.filter(pk=run.pk).update(
        state=State.RUNNING, attempts=attempts, claimed_by="dead@host", task_id="task-9",
        heartbeat_at=timezone.now() - timezone.timedelta(seconds=silent_for), **fields)
    return Run.objects.get(pk=run.pk)


def test_reaper_requeues_a_silent_run(settings, sft_then_dpo, enqueued, django_capture_on_commit_callbacks):
    settings.PTLAB_REAP_AFTER_SECONDS = 60
    sft, dpo = sft_then_dpo
    running(sft, silent_for=30)
    assert do_reap() == []  # not silent long enough
    running(sft, silent_for=61)
    with django_capture_on_commit_callbacks(execute=True):
        assert len(do_reap()) == 1
    sft.refresh_from_db()
    assert sft.state == State.QUEUED and sft.attempts == 1 and "worker died" in sft.log
    assert enqueued == [(sft.pk, "train")]
    assert Run.objects.get(pk=dpo.pk).state == State.WAITING
    assert Run.objects.claim(sft.pk, "w2", "t2").attempts == 2


def test_reaper_fails_after_max_attempts(settings, sft_then_dpo):
    settings.PTLAB_MAX_ATTEMPTS = 3
    sft, dpo = sft_then_dpo
    running(sft, attempts=3, silent_for=600)
    do_reap()
    sft.refresh_from_db()
    assert sft.state == State.FAILED
    assert sft.error.startswith("worker died: dead@host sent no heartbeat for 600 s (attempt 3 of 3)")
    assert Run.objects.get(pk=dpo.pk).state == State.FAILED


def test_a_run_handed_back_at_shutdowns_past_the_limit_says_so(settings, sft_then_dpo):
    settings.PTLAB_MAX_ATTEMPTS = 3
    sft, _ = sft_then_dpo
    running(sft, attempts=5, silent_for=600)  # twice handed back by stopping workers, uncounted
    do_reap()
    sft.refresh_from_db()
    assert sft.state == State.FAILED and "(attempt 5, past the limit of 3 after requeues" in sft.error


def test_reaper_cancels_a_silent_run_that_was_asked_to_stop(sft_then_dpo):
    sft, _ = sft_then_dpo
    running(sft, silent_for=600, stop_requested=True, stop_requested_at=timezone.now())
    do_reap()
    assert Run.objects.get(pk=sft.pk).state == State.CANCELLED


@pytest.mark.parametrize("case", ["requeue", "fail", "cancel"])
def test_reaper_leaves_alone_a_run_that_beat_after_it_was_read_as_silent(monkeypatch, settings, sft_then_dpo,
                                                                         enqueued, case):
    settings.PTLAB_MAX_ATTEMPTS = 3
    sft, dpo = sft_then_dpo
    extra = {"stop_requested": True, "stop_requested_at": timezone.now()} if case == "cancel" else {}
    running(sft, attempts=3 if case == "fail" else 1, silent_for=600, **extra)
    queryset = type(Run.objects.all())
    stale = queryset.stale

    def read_then_beat(qs, silent_since):  # the reaper reads the silent run; its heartbeat lands right after
        found = list(stale(qs, silent_since))
        Run.objects.filter(pk=sft.pk).update(heartbeat_at=timezone.now())
        return found

    monkeypatch.setattr(queryset, "stale", read_then_beat)
    assert do_reap() == []
    sft.refresh_from_db()
    assert sft.state == State.RUNNING and sft.claimed_by == "dead@host" and "worker died" not in sft.log
    assert enqueued == [] and Run.objects.get(pk=dpo.pk).state == State.WAITING


def test_forced_cancel_after_the_grace_period(monkeypatch, settings, sft_then_dpo):
    settings.PTLAB_CANCEL_GRACE_SECONDS = 30
    revoked = []
    from webapp.celery import app

    monkeypatch.setattr(app.control, "revoke", lambda task_id, **kw: revoked.append((task_id, kw)))
    sft, _ = sft_then_dpo
    running(sft, stop_requested=True, stop_requested_at=timezone.now() - timezone.timedelta(seconds=10))
    do_reap()
    assert revoked == [] and Run.objects.get(pk=sft.pk).state == State.RUNNING
    Run.objects.filter(pk=sft.pk).update(stop_requested_at=timezone.now() - timezone.timedelta(seconds=31))
    do_reap()
    assert revoked == [("task-9", {"terminate": True, "signal": "SIGKILL"})]
    sft.refresh_from_db()
    assert sft.state == State.CANCELLED and "killed after no clean stop within 30 s" in sft.log


def test_a_worker_that_lost_its_run_writes_nothing(sft_then_dpo):
    sft, _ = sft_then_dpo
    sink = DatabaseSink(running(sft, attempts=1))
    sink.log_metrics(1, {"train/loss": 1.0})
    Run.objects.filter(pk=sft.pk).update(attempts=2)  # reaped and claimed again by another worker
    sink.progress(Progress(2, 4, "training", 1.0, 1.0))
    assert sink.lost and sink.should_stop()
    sink.log_metrics(2, {"train/loss": 0.5})
    sink.log_samples(2, [TrainingSample(2, "p", "c", 0.0)])
    assert Metric.objects.filter(run=sft).count() == 1 and not Sample.objects.filter(run=sft).exists()
    assert Run.objects.get(pk=sft.pk).step == 0
    mine = Run.objects.get(pk=sft.pk)
    mine.attempts = 1  # the first worker's claim token
    assert not actions.do_finish_run(mine, State.SUCCEEDED)
    assert Run.objects.get(pk=sft.pk).state == State.RUNNING


def test_truncate_after_forgets_later_steps(sft_then_dpo):
    sft, _ = sft_then_dpo
    sink = DatabaseSink(running(sft))
    for step in range(0, 7):
        sink.log_metrics(step, {"train/loss": float(step)})
        if step % 3 == 0:
            sink.log_metrics(step, {"eval/reward": step / 10, "eval/kl": 0.0})
            sink.log_samples(step, [TrainingSample(step, "p", "c", 0.0)])
    sink.truncate_after(3)
    assert sorted(set(Metric.objects.filter(run=sft).values_list("step", flat=True))) == [0, 1, 2, 3]
    assert sorted(Sample.objects.filter(run=sft).values_list("step", flat=True)) == [0, 3]
    sft.refresh_from_db()
    assert sft.latest == {"eval/reward": 0.3, "eval/kl": 0.0, "step": 3}
    assert "resuming from the checkpoint at step 3" in sft.log


def test_should_stop_reads_the_database_at_most_once_a_second(monkeypatch, sft_then_dpo,
                                                              django_assert_num_queries):
    sft, _ = sft_then_dpo
    sink = DatabaseSink(running(sft))
    clock = [100.0]
    monkeypatch.setattr("webapp.workers.sink.time.monotonic", lambda: clock[0])
    with django_assert_num_queries(1):
        for _ in range(50):
            assert not sink.should_stop()
            clock[0] += 0.01
    clock[0] += 1.0
    with django_assert_num_queries(1):
        sink.should_stop()


def test_nan_metrics_are_stored_and_the_status_stays_json(sft_then_dpo, alice_client):
    sft, _ = sft_then_dpo
    sink = DatabaseSink(running(sft))
    sink.log_metrics(2, {"eval/reward": float("nan"), "eval/kl": float("inf")})
    response = alice_client.get(f"/experiments/{sft.experiment_id}/status.json")
    run = next(r for r in response.json()["runs"] if r["id"] == sft.pk)
    assert run["reward"] is None and run["kl"] is None and run["eval_step"] == 2
    assert list(Metric.objects.filter(run=sft).values_list("value", flat=True)) == [None, None]


def test_heartbeat_beats_for_run_and_worker(sft_then_dpo):
    sft, _ = sft_then_dpo
    run = running(sft, silent_for=100)
    beat = execution.Heartbeat(DatabaseSink(run), "w1@host")
    beat.beat()
    run.refresh_from_db()
    assert (timezone.now() - run.heartbeat_at).total_seconds() < 5
    assert Worker.objects.get(hostname="w1@host").current_run_id == run.pk


def test_a_worker_shutting_down_hands_its_run_back(sft_then_dpo, enqueued, django_capture_on_commit_callbacks):
    sft, _ = sft_then_dpo
    running(sft)
    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.do_requeue_orphans("dead@host") == [sft.pk]
    sft.refresh_from_db()
    assert sft.state == State.QUEUED and "shut down" in sft.log and enqueued == [(sft.pk, "train")]


@pytest.mark.parametrize("in_broker, age, resent", [(0, 120, True), (3, 120, False), (0, 10, False),
                                                     (None, 120, False)])
def test_lost_messages_are_sent_again(monkeypatch, settings, sft_then_dpo, enqueued,
                                      django_capture_on_commit_callbacks, in_broker, age, resent):
    settings.PTLAB_RESEND_AFTER_SECONDS = 60
    monkeypatch.setattr(recovery, "queue_lengths", lambda names: {n: in_broker for n in names})
    sft, _ = sft_then_dpo
    Run.objects.filter(pk=sft.pk).update(queued_at=timezone.now() - timezone.timedelta(seconds=age))
    with django_capture_on_commit_callbacks(execute=True):
        done = recovery.do_resend_lost(["train"])
    assert bool(done) == resent and (enqueued == [(sft.pk, "train")]) == resent
    if resent:  # and not again at the next tick
        assert recovery.do_resend_lost(["train"]) == []


def test_a_run_queued_with_the_database_clock_is_sent_again(monkeypatch, sft_then_dpo, enqueued,
                                                           django_capture_on_commit_callbacks):
    """queued_at as enqueue() writes it (the database's Now(): on SQLite text with milliseconds), not a
    Python datetime: the resend's conditional update must still match it."""
    monkeypatch.setattr(recovery, "queue_lengths", lambda names: {n: 0 for n in names})
    sft, _ = sft_then_dpo
    later = timezone.now() + timezone.timedelta(seconds=3600)
    with django_capture_on_commit_callbacks(execute=True):
        done = recovery.do_resend_lost(["train"], now=later)
    assert done == [f"run #{sft.pk}: its message was lost (broker restarted?): sent again"]
    assert enqueued[-1] == (sft.pk, "train")


def test_reap_command(monkeypatch, sft_then_dpo):
    from io import StringIO

    from django.core.management import call_command

    monkeypatch.setattr(recovery, "queue_lengths", lambda names: {})
    sft, _ = sft_then_dpo
    running(sft, silent_for=3600)
    out = StringIO()
    call_command("reap", stdout=out)
    assert f"run #{sft.pk}: worker died" in out.getvalue()
    assert Run.objects.get(pk=sft.pk).state == State.QUEUED


def killed_after_one_step(run, sink):
    import os
    import signal

    sink.truncate_after(-1)  # as the runner does on a start without a checkpoint
    sink.log_metrics(1, {"train/loss": 1.0})
    os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does


@pytest.mark.django_db(transaction=True)  # the forked process must see the rows: no test transaction
def test_a_run_is_trained_in_a_process_of_its_own(monkeypatch, sft_then_dpo):
    sft, _ = sft_then_dpo
    monkeypatch.setattr(execution, "_train", fake_training())  # inherited by the fork
    assert execution.execute_in_fresh_process(sft.pk, "w1@host", "task-1") == State.SUCCEEDED
    sft.refresh_from_db()
    assert sft.state == State.SUCCEEDED and sft.latest["eval/reward"] == 0.5
    assert Run.objects.get(method="dpo", experiment=sft.experiment).state == State.QUEUED  # released


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_process_is_killed_is_requeued_at_once(monkeypatch, settings, sft_then_dpo, enqueued):
    settings.PTLAB_MAX_ATTEMPTS = 2
    sft, _ = sft_then_dpo
    monkeypatch.setattr(execution, "_train", killed_after_one_step)
    Worker.objects.create(hostname="w1@host")
    outcome = execution.execute_in_fresh_process(sft.pk, "w1@host", "task-1")
    assert outcome.startswith("process died: the run's process killed by SIGKILL")
    sft.refresh_from_db()
    assert sft.state == State.QUEUED and sft.attempts == 1 and "killed by SIGKILL" in sft.log
    assert (sft.pk, sft.experiment.queue) in enqueued  # sent again, not left for the reaper's 60 s
    assert Metric.objects.filter(run=sft).count() == 1  # what it logged stays
    assert Worker.objects.get(hostname="w1@host").current_run is None
    # The second death is the last attempt: the run fails with the cause, not "worker died".
    execution.execute_in_fresh_process(sft.pk, "w1@host", "task-2")
    sft.refresh_from_db()
    assert sft.state == State.FAILED and "killed by SIGKILL" in sft.error and "attempt 2 of 2" in sft.error


def terminated_after_one_step(run, sink):
    import os
    import signal

    sink.log_metrics(1, {"train/loss": 1.0})
    os.kill(os.getpid(), signal.SIGTERM)  # a worker's shutdown (run_dev.py signals every process group)


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_process_is_stopped_is_requeued_even_at_its_last_attempt(monkeypatch, settings,
                                                                              sft_then_dpo, enqueued):
    settings.PTLAB_MAX_ATTEMPTS = 1
    sft, _ = sft_then_dpo
    monkeypatch.setattr(execution, "_train", terminated_after_one_step)
    execution.execute_in_fresh_process(sft.pk, "w1@host", "task-1")
    sft.refresh_from_db()
    assert sft.state == State.QUEUED and "killed by SIGTERM; requeued (it resumes" in sft.log, sft.log
    assert (sft.pk, sft.experiment.queue) in enqueued
