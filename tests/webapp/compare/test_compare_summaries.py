"""Finished runs' series stored in the database (compare.models.SeriesSummary): stored when a run
finishes (the `runs_ended` signal) or by `manage.py store_summaries`, read by the comparison instead of
the metric rows, and a fallback to the rows for a finished run without one, giving the same figures.
A GET never writes them."""

import io
import json
import math
import random

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from webapp.compare import loader
from webapp.compare.core.series import MAX_POINTS, Series
from webapp.compare.demo import fill_run
from webapp.compare.models import SPEC, SeriesSummary, SeriesSummaryQuerySet
from webapp.experiments.actions import do_cancel_run, do_finish_run
from webapp.experiments.models import Metric, Run

VIEWS = [{"x": "step", "smoothing": 0}, {"x": "step", "smoothing": 0.6}, {"x": "tokens", "smoothing": 0.6},
         {"x": "wall", "smoothing": 0}]


@pytest.fixture(autouse=True)
def fresh_cache():
    loader.clear_cache()
    yield
    loader.clear_cache()


def trained(experiment, steps=40, eval_every=10) -> list[Run]:
    """Every run of the experiment has logged its metrics and is still running (its worker's view)."""
    for run in experiment.runs.all():
        fill_run(run, steps=steps, eval_every=eval_every, state=Run.State.RUNNING, proxy=run.method == "ppo")
    return list(experiment.runs.all())


def finish(runs, capture, state=Run.State.SUCCEEDED) -> None:
    with capture(execute=True):  # the summary is stored once the run's end has committed
        for run in runs:
            assert do_finish_run(run, state)


def metric_queries(ctx) -> list[str]:
    """The reads of metric series (the rating leaderboard beside the charts reads one value per run)."""
    return [q["sql"] for q in ctx.captured_queries if "experiments_metric" in q["sql"] and "wall_time" in q["sql"]]


def payloads(client, exp) -> list[bytes]:
    url = reverse("compare:experiment_data", args=[exp.pk])
    out = []
    for params in VIEWS:
        loader.clear_cache()
        out.append(client.get(url, params).content)
    return out


def reward_steps(payload: bytes) -> dict[int, list[int]]:
    reward = next(f["figure"] for f in json.loads(payload)["figures"] if f["id"] == "reward")
    return {t["meta"]["run"]: t["x"] for t in reward["data"] if t["meta"]["kind"] == "run"}


def test_a_finished_run_stores_its_series_and_the_page_reads_them_not_the_rows(
        alice_client, alice, make_experiment, django_capture_on_commit_callbacks):
    exp = make_experiment(alice, methods=["dpo", "ppo"])
    runs = trained(exp)
    finish(runs[:1], django_capture_on_commit_callbacks)
    finish(runs[1:], django_capture_on_commit_callbacks, Run.State.FAILED)
    stored = {s.run_id: s for s in SeriesSummary.objects.all()}
    assert sorted(stored) == sorted(r.pk for r in runs)
    assert all(s.attempts == 0 and s.spec == SPEC for s in stored.values())
    assert [p for p in stored[runs[0].pk].series["eval/reward"]["points"][0]] == [0, 10, 20, 30, 40]
    assert "train/num_tokens" in stored[runs[0].pk].series  # the tokens axis too

    url = reverse("compare:experiment_data", args=[exp.pk])
    with CaptureQueriesContext(connection) as ctx:
        first = alice_client.get(url).content
    assert metric_queries(ctx) == []
    # Without any metric row left, the cold page draws the same curves: it reads the stored series.
    Metric.objects.filter(run__experiment=exp).delete()
    loader.clear_cache()
    assert alice_client.get(url).content == first
    assert reward_steps(first) == {run.pk: [0, 10, 20, 30, 40] for run in runs}
    page = alice_client.get(reverse("compare:experiment", args=[exp.pk]))
    assert page.status_code == 200 and page.context["summary"]["groups"]


def test_a_run_without_a_summary_falls_back_to_its_rows_with_the_same_figures(
        alice_client, alice, make_experiment, django_capture_on_commit_callbacks):
    exp = make_experiment(alice, methods=["dpo", "ppo", "grpo"])
    runs = trained(exp, steps=1200, eval_every=50)  # train/* at every step: downsampled to MAX_POINTS
    Metric.objects.create(run=runs[0], step=1201, name="train/loss", value=None, wall_time=2e9)  # a NaN
    finish(runs, django_capture_on_commit_callbacks)
    stored = {s.run_id: s.series for s in SeriesSummary.objects.all()}
    assert len(stored[runs[0].pk]["train/loss"]["points"][0]) <= MAX_POINTS
    with_summaries = payloads(alice_client, exp)

    SeriesSummary.objects.all().delete()  # runs that finished before summaries were stored
    loader.clear_cache()
    with CaptureQueriesContext(connection) as ctx:
        assert alice_client.get(reverse("compare:experiment_data", args=[exp.pk])).content == with_summaries[0]
    assert metric_queries(ctx)
    assert not SeriesSummary.objects.exists()  # a GET never writes
    assert payloads(alice_client, exp) == with_summaries
    # Stored again by the command, the same as when the runs finished.
    call_command("store_summaries", stdout=io.StringIO())
    assert {s.run_id: s.series for s in SeriesSummary.objects.all()} == stored


def test_a_stale_summary_is_not_used_and_is_replaced(alice_client, alice, make_experiment,
                                                      django_capture_on_commit_callbacks):
    exp = make_experiment(alice, methods=["dpo"])
    (run,) = trained(exp)
    finish([run], django_capture_on_commit_callbacks)
    url = reverse("compare:experiment_data", args=[exp.pk])
    expected = alice_client.get(url).content
    for stale in ({"attempts": 7}, {"spec": "made-with-other-names"}):
        SeriesSummary.objects.update(**stale, series={"eval/reward": {"points": [[0], [9.0], [0.0]],
                                                                      "means": [[0], [9.0], [1], [0.0]]}})
        loader.clear_cache()
        with CaptureQueriesContext(connection) as ctx:
            assert alice_client.get(url).content == expected
        assert metric_queries(ctx)
        assert SeriesSummary.objects.get().series["eval/reward"]["points"][1] == [9.0]  # a GET never writes
        call_command("store_summaries", stdout=io.StringIO())
        summary = SeriesSummary.objects.get()
        assert (summary.attempts, summary.spec) == (run.attempts, SPEC)


def test_a_failure_to_store_leaves_the_run_finished_and_its_page_working(
        alice_client, alice, make_experiment, django_capture_on_commit_callbacks, monkeypatch):
    exp = make_experiment(alice, methods=["dpo"])
    (run,) = trained(exp)

    def broken(self, series_of):
        raise DatabaseError("database is locked")

    monkeypatch.setattr(SeriesSummaryQuerySet, "put", broken)
    finish([run], django_capture_on_commit_callbacks)
    assert Run.objects.get(pk=run.pk).state == Run.State.SUCCEEDED and not SeriesSummary.objects.exists()
    url = reverse("compare:experiment_data", args=[exp.pk])
    response = alice_client.get(url)  # answered from the rows
    assert response.status_code == 200 and reward_steps(response.content) == {run.pk: [0, 10, 20, 30, 40]}
    monkeypatch.undo()
    loader.clear_cache()
    assert alice_client.get(url).content == response.content
    assert not SeriesSummary.objects.filter(run=run).exists()  # a GET never writes
    call_command("store_summaries", stdout=io.StringIO())
    assert SeriesSummary.objects.filter(run=run).exists()
    loader.clear_cache()
    assert alice_client.get(url).content == response.content


def test_a_run_cancelled_while_queued_keeps_its_earlier_attempts_series(
        alice, make_experiment, django_capture_on_commit_callbacks):
    exp = make_experiment(alice, methods=["dpo"])
    (run,) = trained(exp)
    Run.objects.filter(pk=run.pk).update(state=Run.State.QUEUED)  # requeued by the reaper
    with django_capture_on_commit_callbacks(execute=True):
        do_cancel_run(run)
    summary = SeriesSummary.objects.get(run=run)
    assert summary.series["eval/reward"]["points"][0] == [0, 10, 20, 30, 40]


def test_query_count_with_stored_series_does_not_grow_with_runs(
        client, alice, make_experiment, django_capture_on_commit_callbacks, django_assert_num_queries):
    client.force_login(alice)
    small = make_experiment(alice, name="small", methods=["dpo", "ppo"])
    big = make_experiment(alice, name="big", methods=["sft", "dpo", "ppo", "grpo"], seeds=2)
    finish(trained(small, steps=20) + trained(big, steps=20), django_capture_on_commit_callbacks)
    assert SeriesSummary.objects.count() == 10
    for name in ("compare:experiment", "compare:experiment_data"):
        loader.clear_cache()
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse(name, args=[small.pk])).status_code == 200
        assert metric_queries(ctx) == []
        loader.clear_cache()
        with django_assert_num_queries(len(ctx.captured_queries)):
            assert client.get(reverse(name, args=[big.pk])).status_code == 200


def test_stored_series_round_trip_exactly():
    """encode -> JSON -> decode gives back the snapshot: every point (first, last, min, max of each
    bucket) and bucket mean, bit for bit."""
    rng = random.Random(3)
    series = {"a": Series(), "b": Series(), "empty": Series()}
    for step in range(3000):
        series["a"].add(step, rng.gauss(0, 1) * 10 ** rng.randint(-8, 8), 1.7e9 + step * 0.731)
        series["b"].add(rng.randrange(0, 10_000), -0.0 if step == 5 else rng.random(), 1.7e9 + rng.random())
    series["empty"].add(1, math.nan, 0.0)
    snapshot = {name: s.snapshot() for name, s in series.items()}
    back = SeriesSummary.decode(json.loads(json.dumps(SeriesSummary.encode(snapshot))))
    assert back == snapshot
    assert back["a"].first[0] == 0 and back["a"].last[0] == 2999 and len(back["a"].points) <= MAX_POINTS
    assert min(p[1] for p in back["a"].points) == min(p[1] for p in snapshot["a"].points)
