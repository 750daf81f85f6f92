"""The new-experiment form in a real browser (Debian's Chromium): per-method settings that differ from the
experiment's values carry a badge and can be reset; changing the base model warns when learning rates
were set for the old one; sections fold; the sticky action bar never covers a focused field; SFT alone
starts without unticking "start from the SFT model" ("Started 1 run")."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from webapp.experiments.models import Experiment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-form-123"


def log_in(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base_url + "/")


def test_override_badges_reset_model_warning_folding_and_sft_alone(live_server, broker, page, django_user_model,
                                                                     screenshot_dir):
    django_user_model.objects.create_user("sana", password=PASSWORD)
    log_in(page, live_server.url, "sana")
    page.goto(live_server.url + "/experiments/new/")
    dpo = page.locator("fieldset[data-method=dpo]")
    assert page.locator(".badge.override:visible").count() == 0  # the example as it is: nothing changed

    # A changed setting: its badge, the section's count, and the reset link.
    page.fill("#id_dpo-learning_rate", "1e-4")
    expect(dpo.locator("#field-dpo-learning_rate .badge.override")).to_be_visible()
    expect(dpo.locator("[data-overrides]")).to_have_text("1 changed")
    page.fill("#id_dpo-beta", "0.3")
    expect(dpo.locator("[data-overrides]")).to_have_text("2 changed")
    page.fill("#id_sft-max_steps", "")  # blank: the experiment's steps, not the example's 300
    expect(page.locator("fieldset[data-method=sft] [data-overrides]")).to_have_text("1 changed")
    page.fill("#id_dpo-learning_rate", "0.00005")  # the same number written otherwise: not a change
    expect(dpo.locator("[data-overrides]")).to_have_text("1 changed")
    page.screenshot(path=str(screenshot_dir / "experiment_form_overrides.png"), full_page=True)
    # Headless Chromium may drop the first click after a full-page screenshot: activate the button by keyboard.
    dpo.locator("[data-reset]").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#id_dpo-beta")).to_have_value("0.1")
    assert dpo.locator(".badge.override:visible").count() == 0

    # The base model changes while learning rates were set for the old one: a warning names them.
    assert page.is_hidden("#model-warning")
    page.fill("#id_base_model", "demo")
    expect(page.locator("#model-warning")).to_be_visible()
    assert "DPO 5e-05" in page.inner_text("#model-warning") and "“tiny”" in page.inner_text("#model-warning")
    page.fill("#id_base_model", "tiny")
    expect(page.locator("#model-warning")).to_be_hidden()

    # Sections fold.
    dpo.locator("summary .legend").click()
    expect(page.locator("#id_dpo-beta")).to_be_hidden()
    dpo.locator("summary .legend").click()
    expect(page.locator("#id_dpo-beta")).to_be_visible()

    # The sticky bar never covers the field being edited.
    for field in ("#id_ppo-kl_coef", "#id_grpo-beta", "#id_eval_every"):
        page.evaluate("window.scrollTo(0, 0)")
        page.focus(field)
        box = page.locator(field).bounding_box()
        bar = page.locator(".actions.sticky").bounding_box()
        assert box["y"] + box["height"] <= bar["y"] + 1, (field, box, bar)

    # SFT alone, "start from the SFT model" still ticked: it does not apply, so it does not block.
    for method in ("dpo", "ppo", "grpo", "rloo"):
        page.uncheck(f"input[name=methods][value={method}]")
    assert page.is_checked("#id_rl_from_sft") and page.is_disabled("#id_rl_from_sft")
    page.fill("#id_name", "SFT alone")
    page.fill("#id_max_steps", "4")
    page.fill("#id_sft-max_steps", "")
    page.click("button:has-text('Start runs')")
    page.wait_for_url(re.compile(r".*/experiments/\d+/$"))
    assert page.inner_text(".message.success") == "Started 1 run."
    exp = Experiment.objects.get(name="SFT alone")
    assert exp.methods == ["sft"] and not exp.rl_from_sft and exp.runs.count() == 1
