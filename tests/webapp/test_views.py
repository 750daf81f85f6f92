"""Pages: constant query counts on the list, the live status endpoint, escaping of model output,
the workers page."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from webapp.experiments.models import Metric, Run, Sample, Worker

pytestmark = pytest.mark.django_db


def count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_list_query_count_does_not_grow_with_experiments(alice_client, alice, bob, make_experiment):
    make_experiment(alice, methods=["sft", "dpo"])
    one = count_queries(alice_client, reverse("experiments:list"))
    for i in range(6):
        exp = make_experiment(bob if i % 2 else alice, name=f"e{i}", methods=["sft", "grpo", "rloo"], seeds=2)
        exp.shared_with.add(alice)
    Run.objects.filter(method="grpo").update(state=Run.State.RUNNING)
    assert count_queries(alice_client, reverse("experiments:list")) == one


def test_list_shows_counts_and_state(alice_client, alice, make_experiment):
    exp = make_experiment(alice, name="counted", methods=["sft", "dpo", "grpo"])
    Run.objects.filter(experiment=exp, method="dpo").update(state=Run.State.RUNNING)
    html = alice_client.get(reverse("experiments:list")).content.decode()
    assert "counted" in html and "1 running" in html and "2 queued" in html


def test_empty_list_points_to_the_example(alice_client):
    html = alice_client.get(reverse("experiments:list")).content.decode()
    assert "No experiments yet" in html and reverse("experiments:new") in html


def test_status_endpoint(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "dpo"])
    sft = exp.runs.get(method="sft")
    Run.objects.filter(pk=sft.pk).update(state=Run.State.RUNNING, step=5, total=20, eta_s=30.0, phase="training",
                                         latest={"eval/reward": 0.25, "eval/kl": 1.5, "step": 4}, log="a\nb")
    data = alice_client.get(reverse("experiments:status", args=[exp.pk])).json()
    assert data["active"] is True
    run = data["runs"][0]
    assert run | {"log": None} == run | {
        "id": sft.pk, "state": "running", "step": 5, "total": 20, "percent": 25, "eta_s": 30.0, "reward": 0.25,
        "kl": 1.5, "eval_step": 4, "log": None, "active": True}
    assert run["log"] == ["a", "b"]


def test_detail_page_shows_runs_and_progress(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "dpo"], rl_from_sft=True)
    Run.objects.filter(method="sft").update(state=Run.State.FAILED, error="could not load model 'x'",
                                           traceback="Traceback (most recent call last): ...")
    html = alice_client.get(reverse("experiments:detail", args=[exp.pk])).content.decode()
    assert html.count('class="progress"') == 2 and 'data-status-url="' in html
    assert "could not load model &#x27;x&#x27;" in html and "<summary>Traceback</summary>" in html
    assert "Starts from the model of" in html and "js/experiment.js" in html
    assert "Cancel all" in html and "Clone" in html


def test_model_output_is_always_escaped(alice_client, alice, make_experiment):
    evil = "<script>alert('pwned')</script>"
    exp = make_experiment(alice, name=evil)
    run = exp.runs.get()
    Run.objects.filter(pk=run.pk).update(log=f"step 1: {evil}", error=evil, traceback=evil, state=Run.State.FAILED)
    Sample.objects.create(run=run, step=2, prompt_id=0, prompt=evil, completion=evil, reward=0.0)
    Metric.objects.create(run=run, step=2, name="eval/reward", value=0.5, wall_time=0.0)
    for url in (reverse("experiments:detail", args=[exp.pk]), reverse("experiments:run", args=[run.pk]),
                reverse("experiments:list")):
        html = alice_client.get(url).content.decode()
        assert "<script>alert" not in html, url
        assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html, url


def test_run_page_shows_last_eval_samples_and_config(alice_client, alice, make_experiment):
    run = make_experiment(alice).runs.get()
    for step, reward in ((0, 0.1), (2, 0.7)):
        Metric.objects.create(run=run, step=step, name="eval/reward", value=reward, wall_time=0.0)
        Sample.objects.create(run=run, step=step, prompt_id=0, prompt="What is 1+1?", completion=f"completion at step {step}",
                              reward=reward)
    html = alice_client.get(reverse("experiments:run", args=[run.pk])).content.decode()
    assert "0.7000" in html and "0.1000" not in html
    assert "completion at step 2" in html and "completion at step 0" not in html and "at step 2" in html
    assert "&quot;max_steps&quot;: 4" in html
    curves = f'{reverse("compare:runs")}?run={run.pk}'
    assert f'href="{curves}"' in html  # its curves and every evaluation's samples
    assert alice_client.get(curves).status_code == 200


def test_workers_page(monkeypatch, alice_client, alice, make_experiment):
    run = make_experiment(alice, queue="a100").runs.get()
    Worker.objects.create(hostname="gpu1@node", gpu="NVIDIA H100 80GB HBM3", gpu_memory_mb=81559,
                          queues="train", current_run=run)
    Worker.objects.create(hostname="old@node", last_heartbeat=timezone.now() - timezone.timedelta(hours=1))
    monkeypatch.setattr("webapp.experiments.views.queue_lengths", lambda names: {n: 7 for n in names})
    html = alice_client.get(reverse("experiments:workers")).content.decode()
    assert "gpu1@node" in html and "NVIDIA H100 80GB HBM3" in html and "81559 MiB" in html
    assert "alive" in html and "stale" in html and "CPU" in html
    assert "a100" in html and ">7<" in html


def test_workers_page_shows_how_many_gpus_a_worker_holds(monkeypatch, alice_client):
    Worker.objects.create(hostname="node8@gpu", gpu="NVIDIA H200", gpu_memory_mb=143771, gpu_count=8)
    monkeypatch.setattr("webapp.experiments.views.queue_lengths", lambda names: {})
    html = alice_client.get(reverse("experiments:workers")).content.decode()
    assert "8 x NVIDIA H200" in html and "143771 MiB each" in html


def test_a_worker_announces_its_gpus(monkeypatch):
    from webapp.workers import worker

    monkeypatch.setattr(worker.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    seen = []

    def smi(cmd, **kwargs):
        seen.append(cmd)
        return type("R", (), {"stdout": "NVIDIA H100 80GB HBM3, 81559\nNVIDIA H100 80GB HBM3, 81559\n"})()

    monkeypatch.setattr(worker.subprocess, "run", smi)
    assert worker.gpus() == ("NVIDIA H100 80GB HBM3", 81559, 2)
    assert seen[0][-1] == "--id=2,3"
    monkeypatch.setattr(worker.shutil, "which", lambda name: None)
    assert worker.gpus() == ("CPU", None, 0)


def test_workers_page_without_a_broker(settings, alice_client):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    html = alice_client.get(reverse("experiments:workers")).content.decode()
    assert "unknown" in html and "No worker has reported yet" in html


def test_cancel_buttons(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "dpo"])
    sft = exp.runs.get(method="sft")
    Run.objects.filter(pk=sft.pk).update(state=Run.State.RUNNING)
    response = alice_client.post(reverse("experiments:cancel", args=[exp.pk]))
    assert response.status_code == 302
    sft.refresh_from_db()
    assert sft.state == Run.State.RUNNING and sft.stop_requested and sft.stop_requested_at
    assert exp.runs.get(method="dpo").state == Run.State.CANCELLED
    html = alice_client.get(reverse("experiments:detail", args=[exp.pk])).content.decode()
    assert "Cancelling" in html
