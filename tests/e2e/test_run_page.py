"""A run's own page in a real browser (Debian's Chromium): while the run trains (rows written by the test,
as a worker's sink would), its state, step, ETA and charts update without a reload, new samples appear
(model output shown as text), and once it has finished its model and checkpoints can be downloaded."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from playwright.sync_api import expect

from webapp.compare import loader
from webapp.compare.demo import fill_run
from webapp.experiments.models import Experiment, Run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-runpage-123"
HOSTILE = '<img src=x onerror="window.__xss = 1">'


def log_in(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base_url + "/")


def points(page, chart: str) -> int:
    return int(page.get_attribute(f"#run-charts [data-chart={chart}]", "data-points") or 0)


def test_run_page_updates_while_training_then_offers_downloads(live_server, page, django_user_model,
                                                                screenshot_dir, artifact_root):
    loader.clear_cache()
    user = django_user_model.objects.create_user("rhea", password=PASSWORD)
    exp = Experiment.objects.create(owner=user, name="Live PPO", task="arithmetic", methods=["ppo"], max_steps=60,
                                    eval_every=10, eval_prompts=2, eval_samples=1)
    run = Run.objects.create(experiment=exp, method="ppo", config=exp.run_config("ppo", 0), state="running",
                             out_dir=str(artifact_root / "runs" / "1-live"), step=10, total=60, eta_s=125,
                             phase="training")

    def completion(step, prompt_id, index):
        return f"{HOSTILE} answer at step {step}" if prompt_id == 0 else f"plain {step}"

    fill_run(run, steps=60, eval_every=10, prompts=2, per_prompt=1, until=10, state=Run.State.RUNNING,
             completion=completion)
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, step=10, eta_s=125, phase="training")

    log_in(page, live_server.url, "rhea")
    page.goto(live_server.url + run.get_absolute_url())
    # (Waits by locator: the page's CSP forbids the eval a string wait_for_function may need.)
    expect(page.locator("#run-charts [data-chart=reward]")).to_have_attribute("data-points", "2")
    assert page.locator("#run-charts [data-chart]").count() == 4
    assert points(page, "reward") == 2
    assert page.inner_text("[data-field=eta]") == "ETA 2 min 5 s"
    assert page.inner_text("[data-field=steps]") == "step 10 of 60"
    assert page.is_visible("#config pre.config") and page.inner_text("#cli-command").startswith("python -m training run")
    assert page.inner_text("[data-field=sample-step]") == "at step 10"

    # Training goes on: more rows, a new attempt's worth (the cache sees a new attempt and reloads).
    run.metrics.all().delete()
    run.samples.all().delete()
    fill_run(run, steps=60, eval_every=10, prompts=2, per_prompt=1, until=40, state=Run.State.RUNNING,
             completion=completion)
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, step=40, eta_s=30, attempts=1)
    expect(page.locator("[data-field=steps]")).to_have_text("step 40 of 60")
    expect(page.locator("#run-charts [data-chart=reward]")).to_have_attribute("data-points", "5")
    expect(page.locator("[data-field=sample-step]")).to_have_text("at step 40")
    assert page.inner_text("[data-field=eta]") == "ETA 30 s"
    run.refresh_from_db()
    expect(page.locator("#final")).to_contain_text(f"{run.latest['eval/reward']:.4f}")  # step 40's numbers
    assert HOSTILE in page.inner_text("#samples")  # as text, never as an element
    assert page.evaluate("window.__xss") is None and page.locator("#samples img").count() == 0
    assert points(page, "loss") > 0 and points(page, "kl") == 5
    page.screenshot(path=str(screenshot_dir / "run_page_training.png"), full_page=True)

    # It finishes: the page says so, stops polling, and offers the model and its checkpoints.
    model = run.model_dir
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"w" * 5000)
    (run.checkpoints_dir / "checkpoint-60").mkdir(parents=True)
    (run.checkpoints_dir / "checkpoint-60" / "trainer_state.json").write_text("{}")
    run.metrics.all().delete()
    run.samples.all().delete()
    fill_run(run, steps=60, eval_every=10, prompts=2, per_prompt=1, state=Run.State.SUCCEEDED, completion=completion)
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED, step=60, eta_s=None, attempts=2, phase="done")
    expect(page.locator("#run-page")).to_have_attribute("data-state", "succeeded")
    assert page.inner_text("h1 [data-field=state]") == "succeeded" and page.is_hidden("#live")
    page.wait_for_selector("#downloads a:has-text('Final model')")
    with page.expect_download() as info:
        page.click("#downloads a:has-text('Final model')")
    with zipfile.ZipFile(io.BytesIO(open(info.value.path(), "rb").read())) as zf:
        assert sorted(zf.namelist()) == [f"run-{run.pk}-model/config.json", f"run-{run.pk}-model/model.safetensors"]
    assert page.locator("#downloads a:has-text('Checkpoint at step 60')").count() == 1
    drawn = int(page.get_attribute("#run-page", "data-drawn"))
    time.sleep(5)
    assert int(page.get_attribute("#run-page", "data-drawn")) == drawn  # no more polling
    page.screenshot(path=str(screenshot_dir / "run_page_finished.png"), full_page=True)
