"""A run's own page: its live JSON (state, ETA, queue place, the four charts, new samples only), the
command that reproduces it, and its model and checkpoints as streamed zips (owner and sharees only, from
its own folders only)."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
from django.urls import reverse

from webapp.compare import loader
from webapp.compare.core.figures import as_go
from webapp.compare.demo import fill_run
from webapp.experiments.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    loader.clear_cache()
    yield
    loader.clear_cache()


def test_live_json_has_state_eta_charts_and_only_new_samples(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["ppo"])
    run = exp.runs.get()
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, eta_s=42.0, step=10, total=40)
    fill_run(run, steps=40, eval_every=10, prompts=2, per_prompt=1, until=10, state=Run.State.RUNNING)
    url = reverse("compare:run_live", args=[run.pk])
    data = alice_client.get(url).json()
    assert data["run"]["state"] == "running" and data["run"]["eta_s"] == 42.0 and data["run"]["queue_position"] is None
    assert [f["id"] for f in data["figures"]] == ["reward", "kl", "loss", "learning_rate"]
    for item in data["figures"]:
        as_go(item["figure"])  # valid plotly
    reward = data["figures"][0]["figure"]["data"]
    assert reward and reward[0]["x"] == [0, 10]
    assert data["samples_step"] == 10 and len(data["samples"]) == 2
    again = alice_client.get(url, {"samples_step": 10}).json()
    assert "samples" not in again  # the page has them already
    # more steps arrive (written afresh here, as a new attempt would): the charts grow
    Run.objects.filter(pk=run.pk).update(attempts=1)
    run.metrics.all().delete()
    run.samples.all().delete()
    fill_run(run, steps=40, eval_every=10, prompts=2, per_prompt=1, until=30, state=Run.State.RUNNING)
    later = alice_client.get(url, {"samples_step": 10}).json()
    assert later["figures"][0]["figure"]["data"][0]["x"] == [0, 10, 20, 30] and later["samples_step"] == 30


def test_learning_rate_chart_reads_trl_and_ppo_keys(alice_client, alice, make_experiment):
    import time

    from webapp.experiments.models import Metric

    exp = make_experiment(alice, methods=["sft", "ppo"])
    sft, ppo = exp.runs.order_by("id")
    Metric.objects.bulk_create([Metric(run=sft, step=s, name="train/learning_rate", value=1e-3 * (1 - s / 10),
                                       wall_time=time.time()) for s in range(1, 5)]
                               + [Metric(run=ppo, step=s, name="train/lr", value=1e-4, wall_time=time.time())
                                  for s in range(1, 3)])
    for run, n in ((sft, 4), (ppo, 2)):
        lr = alice_client.get(reverse("compare:run_live", args=[run.pk])).json()["figures"][3]["figure"]
        assert len(lr["data"][0]["x"]) == n


def test_queued_run_shows_its_place_in_its_queue(alice_client, alice, make_experiment):
    first = make_experiment(alice, name="first", methods=["sft", "dpo"])
    other_queue = make_experiment(alice, name="elsewhere", queue="gpu-big")
    later = make_experiment(alice, name="later")
    runs = list(first.runs.order_by("id"))
    assert [r.queue_position() for r in runs] == [1, 2]
    assert other_queue.runs.get().queue_position() == 1
    assert later.runs.get().queue_position() == 3
    Run.objects.filter(pk=runs[0].pk).update(state=Run.State.RUNNING)
    assert later.runs.get().queue_position() == 2
    html = alice_client.get(later.runs.get().get_absolute_url()).content.decode()
    assert "place 2 in the queue" in html
    assert alice_client.get(reverse("compare:run_live", args=[later.runs.get().pk])).json()["run"]["queue_position"] == 2


def test_page_shows_config_and_the_cli_command(alice_client, alice, make_experiment):
    run = make_experiment(alice, methods=["dpo"]).runs.get()
    html = alice_client.get(run.get_absolute_url()).content.decode()
    assert f"python -m training run run-{run.pk}.json --out runs/{run.pk}" in html
    assert '&quot;method&quot;: &quot;dpo&quot;' in html and 'id="config" open' in html
    assert str(run.out_dir) not in html  # server folders are never shown


def _saved(run: Run) -> None:
    run.model_dir.mkdir(parents=True)
    (run.model_dir / "config.json").write_text('{"a": 1}')
    (run.model_dir / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (run.model_dir / "sub").mkdir()
    (run.model_dir / "sub" / "tokenizer.json").write_text("{}")
    for step in (20, 40):
        ck = run.checkpoints_dir / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "trainer_state.json").write_text(json.dumps({"step": step}))
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED)


def _unzip(response) -> dict[str, bytes]:
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    body = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def test_model_and_checkpoints_download_as_streamed_zips(client, alice, bob, make_experiment, tmp_path):
    exp = make_experiment(alice, methods=["sft"])
    run = exp.runs.get()
    _saved(run)
    (tmp_path / "secret.txt").write_text("not yours")
    os.symlink(tmp_path / "secret.txt", run.model_dir / "link.txt")  # a link is never followed
    client.force_login(alice)
    page = client.get(run.get_absolute_url()).content.decode()
    model_url = reverse("experiments:run_download_model", args=[run.pk])
    ck_url = reverse("experiments:run_download_checkpoint", args=[run.pk, 40])
    assert model_url in page and ck_url in page and "Checkpoint at step 20" in page
    files = _unzip(client.get(model_url))
    assert sorted(files) == [f"run-{run.pk}-model/config.json", f"run-{run.pk}-model/model.safetensors",
                             f"run-{run.pk}-model/sub/tokenizer.json"]
    assert files[f"run-{run.pk}-model/model.safetensors"] == (run.model_dir / "model.safetensors").read_bytes()
    response = client.get(model_url)
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-model.zip"'
    assert len(next(iter(response.streaming_content))) < 3 * 1024 * 1024  # streamed, not built whole
    assert _unzip(client.get(ck_url)) == {f"run-{run.pk}-checkpoint-40/trainer_state.json": b'{"step": 40}'}
    assert client.get(reverse("experiments:run_download_checkpoint", args=[run.pk, 30])).status_code == 404
    # a sharee may download; a stranger gets 404
    client.force_login(bob)
    assert client.get(model_url).status_code == 404
    exp.shared_with.add(bob)
    assert client.get(model_url).status_code == 200


def test_no_download_outside_the_artifacts(alice_client, alice, make_experiment, tmp_path):
    run = make_experiment(alice).runs.get()
    outside = tmp_path / "elsewhere"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "config.json").write_text("{}")
    Run.objects.filter(pk=run.pk).update(out_dir=str(outside), state=Run.State.SUCCEEDED)
    assert alice_client.get(reverse("experiments:run_download_model", args=[run.pk])).status_code == 404
    run.refresh_from_db()
    assert run.downloads() == []
    for bad in ("checkpoint-..%2F..%2Fetc.zip", "checkpoint--1.zip", "../model.zip"):
        assert alice_client.get(f"/runs/{run.pk}/download/{bad}").status_code == 404
