"""Judge jobs: the owner lets a local judge vote from the leaderboard or the API; the job is sent to the
`try` queue once committed and run there (claimed once, progress and failure on the row); only the owner
starts or reads one; one active job per experiment; `more` only once the judge passes the owner's threshold."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.webapp.conftest import Api
from tests.webapp.test_ratings_judge import shorter_is_better
from webapp.experiments.models import Run
from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.items import Item
from webapp.ratings.judge import do_judge_votes
from webapp.ratings.judge_jobs import ChunkedJudge, do_run_judge_job
from webapp.ratings.models import Invitation, JudgeJob, RatingSetup, Vote

pytestmark = pytest.mark.django_db


@pytest.fixture
def exp(alice, bob):
    """Two people who prefer the shorter answer voted on every pair of half the prompts."""
    e = make_demo_experiment(alice, methods=("sft", "dpo"), prompts=6, steps=(0, 10))
    Invitation.objects.create(experiment=e, rater=bob)
    arena = Arena(e)
    for rater in (alice, bob):
        for first, second in arena.pairs:
            for prompt_id in arena.prompt_ids[:3]:
                index = arena.index_for(first, second, prompt_id)
                a, b = arena.completions[(first, prompt_id, index)], arena.completions[(second, prompt_id, index)]
                outcome = "tie" if len(a) == len(b) else "a" if len(a) < len(b) else "b"
                do_cast_vote(e, rater, Item(0, prompt_id, index, first, second, True), outcome)
    return e


@pytest.fixture
def fake_judge(monkeypatch):
    """The worker's judge, without a model: shorter answers win."""
    monkeypatch.setattr("webapp.ratings.judge_jobs.local_judge", lambda model, device="auto": shorter_is_better)


def post(client, exp, **data):
    return client.post(reverse("ratings:start_judge", args=[exp.pk]), {"model": "tiny", "mode": "calibrate", **data})


def calibrate_above_threshold(exp, model="tiny"):
    """The judge on `model` agrees with people perfectly, and the owner's threshold lets it label more."""
    do_judge_votes(exp, shorter_is_better, f"pairwise_judge:{model}")
    RatingSetup.objects.update_or_create(experiment=exp, defaults={"judge_threshold": 0.5})


def test_the_owner_starts_a_job_sent_on_commit_and_the_worker_runs_it_once(
        exp, alice_client, judge_jobs_sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(alice_client, exp)
    job = JudgeJob.objects.get()
    assert response.status_code == 302 and response["Location"].endswith("#judge")
    assert judge_jobs_sent == [job.pk] and job.state == "queued" and job.requested_by == exp.owner
    page = alice_client.get(reverse("ratings:leaderboard", args=[exp.pk])).content.decode()
    assert 'id="judge-form"' in page and reverse("ratings:judge_job_status", args=[job.pk]) in page

    assert do_run_judge_job(job.pk) == "done"  # the real tiny model, read from token probabilities
    assert do_run_judge_job(job.pk) == "not queued"  # a redelivered message changes nothing
    job.refresh_from_db()
    people = {(v.prompt_id, v.first, v.second) for v in Vote.objects.at(exp)}
    judged = Vote.objects.filter(experiment=exp, judge="pairwise_judge:tiny")
    assert job.state == "done" and job.progress == 100 and job.items == job.votes == len(people) == judged.count()
    assert job.started and job.ended and job.error == ""
    status = alice_client.get(reverse("ratings:judge_job_status", args=[job.pk])).json()
    assert status["state"] == "done" and status["finished"] and status["url"].endswith("#judges")
    page = alice_client.get(reverse("ratings:leaderboard", args=[exp.pk])).content.decode()
    assert 'id="judges"' in page and "pairwise_judge:tiny" in page


def test_the_judge_is_called_chunk_by_chunk_with_progress():
    reports = []
    judge = ChunkedJudge(shorter_is_better, lambda done, total: reports.append((done, total)), chunk=2)
    texts, refs = ["a", "bbb", "cc", "d", "eee"], ["bb"] * 5
    assert judge(texts, prompts=[""] * 5, reference=refs) == shorter_is_better(texts, reference=refs)
    assert reports == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_a_failing_judge_fails_its_job_with_the_reason(exp, monkeypatch, settings):
    def broken(model, device="auto"):
        raise OSError(f"{settings.ARTIFACT_ROOT}/runs/7-abc/model does not exist")

    monkeypatch.setattr("webapp.ratings.judge_jobs.local_judge", broken)
    job = JudgeJob.objects.create(experiment=exp, requested_by=exp.owner, model="tiny")
    assert do_run_judge_job(job.pk) == "failed"
    job.refresh_from_db()
    assert job.state == "failed" and "OSError" in job.error and "run:7" in job.error
    assert str(settings.ARTIFACT_ROOT) not in job.error  # no server path shown
    assert not Vote.objects.filter(experiment=exp).exclude(judge="").exists()


def test_more_below_the_threshold_is_refused_and_labels_pairs_above_it(exp, alice_client, fake_judge):
    response = post(alice_client, exp, mode="more", limit="5")
    assert response.status_code == 400 and "passes your threshold" in response.content.decode()
    page = alice_client.get(reverse("ratings:leaderboard", args=[exp.pk])).content.decode()
    assert 'value="more" id="id_mode_1" disabled' in page
    # a job made behind the form's back is refused by the worker too
    sneaky = JudgeJob.objects.create(experiment=exp, requested_by=exp.owner, model="tiny", mode="more", limit=5)
    assert do_run_judge_job(sneaky.pk) == "failed"
    sneaky.refresh_from_db()
    assert "threshold" in sneaky.error

    calibrate_above_threshold(exp)
    before = Vote.objects.filter(experiment=exp).exclude(judge="").count()
    assert 'value="more" id="id_mode_1" disabled' not in alice_client.get(
        reverse("ratings:leaderboard", args=[exp.pk])).content.decode()
    assert post(alice_client, exp, mode="more", limit="5").status_code == 302
    job = JudgeJob.objects.get(state="queued")
    assert job.limit == 5 and do_run_judge_job(job.pk) == "done"
    job.refresh_from_db()
    assert job.votes == 5 and Vote.objects.filter(experiment=exp).exclude(judge="").count() == before + 5


@pytest.mark.parametrize("data, field", [
    ({"model": "/etc"}, "model"), ({"model": "run:999"}, "model"), ({"mode": "everything"}, "mode"),
    ({"mode": "more", "limit": "0"}, "limit"), ({"mode": "more", "limit": "501"}, "limit"),
    ({"mode": "more", "limit": ""}, "limit"),
])
def test_bad_input_is_refused_naming_the_field(exp, alice_client, data, field):
    calibrate_above_threshold(exp)
    response = post(alice_client, exp, **data)
    assert response.status_code == 400 and field in response.context["judge_form"].errors
    assert not JudgeJob.objects.exists()


def test_calibration_needs_peoples_votes(alice, alice_client):
    empty = make_demo_experiment(alice, methods=("sft", "dpo"), prompts=2, steps=(0, 10))
    response = post(alice_client, empty)
    assert response.status_code == 400 and "No person has voted yet" in response.content.decode()


def test_the_owners_finished_runs_may_judge_others_not(exp, alice, bob, alice_client, make_experiment):
    from tests.webapp.test_try_model import saved_run

    mine = saved_run(make_experiment, alice, name="mine")
    theirs = saved_run(make_experiment, bob, name="theirs")
    theirs.experiment.shared_with.add(alice)
    assert post(alice_client, exp, model=f"run:{theirs.pk}").status_code == 400
    Run.objects.filter(pk=mine.pk).update(out_dir=mine.out_dir + "-gone")  # no final model saved any more
    assert "No final model saved" in post(alice_client, exp, model=f"run:{mine.pk}").content.decode()
    Run.objects.filter(pk=mine.pk).update(out_dir=mine.out_dir)
    assert post(alice_client, exp, model=f"run:{mine.pk}").status_code == 302
    assert JudgeJob.objects.get().model == f"run:{mine.pk}"


def test_only_the_owner_may_start_one(exp, client, bob, django_user_model):
    carol = django_user_model.objects.create_user("carol", password="pw-carol-123")
    exp.shared_with.add(carol)
    assert post(client, exp).status_code == 302 and "/login/" in post(client, exp)["Location"]
    for user in (bob, carol):  # an invited rater, a user the experiment is shared with
        client.force_login(user)
        assert client.get(reverse("ratings:leaderboard", args=[exp.pk])).status_code == 200
        assert 'id="judge-form"' not in client.get(reverse("ratings:leaderboard", args=[exp.pk])).content.decode()
        assert post(client, exp).status_code == 404
    job = JudgeJob.objects.create(experiment=exp, requested_by=exp.owner, model="tiny")
    assert client.get(reverse("ratings:judge_job_status", args=[job.pk])).status_code == 404
    assert JudgeJob.objects.count() == 1


def test_csrf_is_required(exp):
    client = Client(enforce_csrf_checks=True)
    client.force_login(exp.owner)
    assert post(client, exp).status_code == 403
    assert not JudgeJob.objects.exists()


def test_one_active_job_per_experiment_and_stale_ones_give_way(exp, alice_client):
    assert post(alice_client, exp).status_code == 302
    response = post(alice_client, exp)
    assert response.status_code == 409 and "already queued or running" in response.content.decode()
    JudgeJob.objects.update(state="running", updated=timezone.now() - timedelta(hours=2))  # its worker died
    assert post(alice_client, exp).status_code == 302
    old, new = JudgeJob.objects.order_by("id")
    assert old.state == "failed" and "stopped reporting" in old.error and new.state == "queued"


def test_judge_jobs_per_hour_are_limited(exp, alice_client, settings):
    settings.PTLAB_MAX_JUDGE_JOBS_PER_HOUR = 1
    assert post(alice_client, exp).status_code == 302
    JudgeJob.objects.update(state="done")
    response = post(alice_client, exp)
    assert response.status_code == 429 and "PTLAB_MAX_JUDGE_JOBS_PER_HOUR" in response.content.decode()


def test_a_broker_that_is_down_leaves_the_job_queued(exp, alice_client, monkeypatch,
                                                     django_capture_on_commit_callbacks):
    def down(task, queue, job_id):
        raise ConnectionError("no broker")

    monkeypatch.setattr("webapp.experiments.jobs.send_job", down)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(alice_client, exp).status_code == 302
    assert JudgeJob.objects.get().state == "queued"


def test_the_api_starts_and_reads_a_job(exp, alice, bob, fake_judge):
    api = Api.of(alice)
    url = f"/api/experiments/{exp.pk}/judge"
    bad = api.post(url, {"model": "/etc", "mode": "more", "limit": "5", "extra": 1})
    assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"limit", "extra"}
    bad = api.post(url, {"model": "/etc", "mode": "more", "limit": 0})
    assert bad.status_code == 400 and {"model", "limit"} <= set(bad.json()["error"]["fields"])
    refused = api.post(url, {"mode": "more", "limit": 5})
    assert refused.status_code == 400 and "threshold" in refused.json()["error"]["fields"]["mode"][0]
    r = api.post(url, {})  # the defaults: tiny, calibrate
    assert r.status_code == 201, r.content
    job = r.json()
    assert job["state"] == "queued" and job["judge"] == "pairwise_judge:tiny" and job["mode"] == "calibrate"
    busy = api.post(url, {})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "judge_busy"
    do_run_judge_job(job["id"])
    read = api.get(f"/api/judge-jobs/{job['id']}").json()
    assert read["state"] == "done" and read["votes"] > 0 and read["error"] == ""
    [cal] = read["calibration"]
    assert cal["judge"] == "pairwise_judge:tiny" and cal["items"] > 0 and cal["kappa"] == pytest.approx(1.0)
    stranger = Api.of(bob)  # an invited rater: not the owner
    assert stranger.post(url, {}).status_code == 404
    assert stranger.get(f"/api/judge-jobs/{job['id']}").status_code == 404
    assert api.get("/api/judge-jobs/999999").status_code == 404


def test_a_judge_whose_worker_was_lost_is_sent_again_on_try_and_its_lost_attempt_casts_no_vote(
        exp, fake_judge, settings, monkeypatch, judge_jobs_sent, django_capture_on_commit_callbacks):
    """The lifecycle of every background job: attempt 1 is taken for lost while it judges (its heartbeat
    stalled) and sent again on `try`; its votes are then refused (nothing written), attempt 2 casts them; after
    PTLAB_MAX_ATTEMPTS lost attempts the job fails."""
    from webapp.experiments import jobs

    settings.PTLAB_REAP_AFTER_SECONDS, settings.PTLAB_MAX_ATTEMPTS = 60, 2
    monkeypatch.setattr(jobs, "queue_lengths", lambda names: {n: 1 for n in names})  # messages wait: no matter
    later = jobs.db_now() + timedelta(seconds=120)
    job = JudgeJob.create_queued(experiment=exp, requested_by=exp.owner, model="tiny")
    set_phase = JudgeJob.set_phase

    def stalled(self, phase, progress, **fields):
        if self.attempts == 1 and phase.startswith("judged 0 of"):
            with django_capture_on_commit_callbacks(execute=True):
                assert jobs.do_resend_lost_jobs(["try"], now=later) == [
                    f"judge job #{job.pk}: its try worker was lost: sent again"]
        return set_phase(self, phase, progress, **fields)

    monkeypatch.setattr(JudgeJob, "set_phase", stalled)
    assert do_run_judge_job(job.pk) == "lost"  # attempt 1
    job.refresh_from_db()
    assert (job.state, job.sends, judge_jobs_sent) == ("queued", 2, [job.pk])
    assert job.message == "Its try worker was lost (attempt 1 of 2); sent again." and job.error == ""
    assert not Vote.objects.filter(experiment=exp, judge=job.name).exists()

    assert do_run_judge_job(job.pk) == "done"  # attempt 2
    job.refresh_from_db()
    judged = Vote.objects.filter(experiment=exp, judge=job.name).count()
    assert (job.attempts, job.votes, job.items) == (2, judged, judged) and judged > 0
    assert job.message == f"pairwise_judge:tiny cast {judged} votes on {judged} items."

    lost = JudgeJob.create_queued(experiment=exp, requested_by=exp.owner, model="demo", attempts=1)
    JudgeJob.claim(lost.pk, "loading the judge's model", 2)  # its second start, whose worker dies too
    assert jobs.do_resend_lost_jobs(["try"], now=later) == [f"judge job #{lost.pk}: the try worker was lost 2 times: failed"]
    lost.refresh_from_db()
    assert lost.state == "failed" and lost.error == "The try worker was lost 2 times; nothing was saved."
