"""Trying a model in a real browser (Debian's Chromium), answered by a real Celery worker on the `try`
queue (through a real Redis): a run's final model beside the base model, the answers appear without a
reload, and a prompt that looks like HTML is shown as text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, _database_url, _stop_group
from training import models
from webapp.experiments.models import Experiment, Run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-try-123"
HOSTILE = '<img src=x onerror="window.__xss = 1">What is 2 + 3?'


@pytest.fixture
def try_worker(live_server, broker, artifact_root, tmp_path):
    """`celery -A webapp worker -Q try --pool solo` on the live server's database."""
    from django.db import connection

    env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict), CELERY_BROKER_URL=broker,
               PTLAB_ARTIFACT_ROOT=str(artifact_root), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    log_path = tmp_path / "try-worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", "try", "-c", "1", "--pool", "solo",
             "-n", f"try-{uuid.uuid4().hex[:8]}@%h", "-l", "INFO", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while b" ready." not in log_path.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_group(proc, grace=1)
            pytest.fail(f"the try worker did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.2)
    yield proc
    _stop_group(proc)


def test_try_a_run_beside_the_base_model(live_server, try_worker, page, django_user_model, artifact_root,
                                         screenshot_dir):
    user = django_user_model.objects.create_user("tara", password=PASSWORD)
    exp = Experiment.objects.create(owner=user, name="Tried", task="arithmetic", methods=["sft"], base_model="tiny")
    run = Run.objects.create(experiment=exp, method="sft", config=exp.run_config("sft", 0), state="succeeded",
                             out_dir=str(artifact_root / "runs" / "1-try"))
    shutil.copytree(models.build_tiny(), run.model_dir)

    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "tara")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(live_server.url + "/")
    page.goto(live_server.url + run.get_absolute_url())
    page.click("#try-link")
    page.wait_for_url(f"**/runs/{run.pk}/try/")
    page.fill("#id_prompt", HOSTILE)
    assert page.is_checked("#id_base")
    page.fill("#id_temperature", "0")
    page.fill("#id_max_new_tokens", "8")
    page.screenshot(path=str(screenshot_dir / "try_form.png"), full_page=True)
    page.click("button:has-text('Ask')")
    page.wait_for_url("**/trials/*/")
    cards = page.locator("#answers .answer")
    assert cards.count() == 2
    expect(page.locator("#trial")).to_have_attribute("data-active", "false", timeout=60_000)
    states = page.locator("#answers [data-field=state]").all_inner_texts()
    assert states == ["done", "done"], page.locator("#answers").inner_text()
    texts = page.locator("#answers [data-field=text]").all_inner_texts()
    assert texts[0] == texts[1] and texts[0].strip()  # greedy, and the run's model is the tiny base itself
    assert page.inner_text("#prompt") == HOSTILE and page.locator("#prompt img").count() == 0
    assert page.evaluate("window.__xss") is None
    assert "base model · tiny" in page.inner_text("#answers")
    page.screenshot(path=str(screenshot_dir / "try_answers.png"), full_page=True)
