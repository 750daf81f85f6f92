"""The judge for real: the owner starts a calibration job through the API (the Python client, real HTTP),
it goes through a real Redis to a real Celery worker serving the `try` queue, which loads the tiny model and
votes on the items people voted on; the job ends done, the votes are marked as the judge's and the
calibration compares it with people. The services are test_integration's fixtures."""

from __future__ import annotations

import pytest
import redis
from django.utils import timezone
from test_integration import (  # noqa: F401  (fixtures)
    WAIT,
    WorkerProcess,
    artifact_root,
    broker,
    enqueued,
    queue,
    redis_url,
    wait_for,
)

from ptlab_client import Client
from webapp.api.models import ApiToken
from webapp.experiments.actions import TRY_QUEUE
from webapp.ratings.demo import make_demo_experiment, simulate_votes
from webapp.ratings.models import JudgeJob, Vote

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


@pytest.fixture
def judge_jobs_sent():
    """Overrides the unit tests' fake: here judge jobs really go to the broker."""
    return None


@pytest.fixture
def try_worker(transactional_db, broker, tmp_path):  # noqa: F811
    """A worker on the `try` queue (its name is fixed: the app sends judge jobs there), as deployed."""
    redis.Redis.from_url(broker).delete(TRY_QUEUE)  # this test database's broker: no message of an earlier session
    proc = WorkerProcess("try", TRY_QUEUE, broker, tmp_path)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_a_calibration_job_runs_in_the_try_worker(live_server, try_worker, django_user_model):
    owner = django_user_model.objects.create_user("judy", password="pw-judy-12345")
    rater = django_user_model.objects.create_user("ray", password="pw-ray-12345")
    exp = make_demo_experiment(owner, methods=("sft", "dpo"), prompts=3, steps=(0, 10), samples=1)
    assert simulate_votes(exp, [owner, rater], 12, seed=1) > 0
    people = {(v.prompt_id, v.first, v.second) for v in Vote.objects.at(exp)}
    client = Client(live_server.url, ApiToken.issue(owner, "judge")[1])

    job = client.start_judge(exp.pk, model="tiny", mode="calibrate")
    assert job["state"] == "queued", job
    wait_for(lambda: JudgeJob.objects.get(pk=job["id"]).finished, WAIT, "the judge job to end", try_worker)

    read = client.judge_job(job["id"])
    assert read["state"] == "done", (read, try_worker.tail())
    assert read["votes"] == read["items"] == len(people) and read["progress"] == 100
    judged = Vote.objects.filter(experiment=exp).exclude(judge="")
    assert set(judged.values_list("judge", flat=True)) == {"pairwise_judge:tiny"}
    assert {(v.prompt_id, v.first, v.second) for v in judged} == people
    assert all(not v.rater.is_active for v in judged.select_related("rater"))
    [cal] = read["calibration"]
    assert cal["judge"] == "pairwise_judge:tiny" and cal["items"] == len(people) > 0
    assert cal["percent"] is not None and 0 <= cal["percent"] <= 1


def test_the_try_workers_supervisor_sends_a_lost_judge_job_again(try_worker, django_user_model):
    """A judge job whose worker died mid-run (claimed, then silent) is requeued by the supervisor of the worker
    serving `try`, as deployed, sent to `try` again and judged there."""
    owner = django_user_model.objects.create_user("judy", password="pw-judy-12345")
    exp = make_demo_experiment(owner, methods=("sft", "dpo"), prompts=2, steps=(0, 10), samples=1)
    assert simulate_votes(exp, [owner], 6, seed=2) > 0
    job = JudgeJob.objects.create(experiment=exp, requested_by=owner, model="tiny")  # its message was taken
    assert JudgeJob.claim(job.pk, "loading the judge's model", 2) is not None  # by a worker that then died
    JudgeJob.objects.filter(pk=job.pk).update(updated=timezone.now() - timezone.timedelta(hours=1))

    wait_for(lambda: JudgeJob.objects.get(pk=job.pk).finished, WAIT, "the lost judge job to be judged", try_worker)
    job.refresh_from_db()
    assert (job.state, job.attempts, job.sends) == ("done", 2, 1), (job.message, try_worker.tail())
    assert job.votes > 0 and Vote.objects.filter(experiment=exp, judge="pairwise_judge:tiny").count() == job.votes
    assert f"resend: judge job #{job.pk}: its try worker was lost: sent again" in try_worker.text()
