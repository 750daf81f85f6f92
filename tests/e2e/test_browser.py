"""The whole app through a real browser: log in, start an experiment from the new-experiment form,
watch its progress bars fill without reloading the page (a real Celery worker trains the runs
through a real Redis), then open a run's results."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PASSWORD = "pw-e2e-user-123"


def run_cards(page) -> list[dict]:
    return page.eval_on_selector_all("#runs [data-run]", """cards => cards.map(card => ({
        id: card.dataset.run,
        label: card.querySelector("h3 a").textContent.trim(),
        state: card.querySelector('[data-field="state"]').textContent.trim(),
        percent: Number(card.querySelector(".progress").getAttribute("aria-valuenow")),
        width: card.querySelector(".progress > span").style.width,
        steps: card.querySelector('[data-field="steps"]').textContent.trim(),
        reward: card.querySelector('[data-field="reward"]').textContent.trim(),
    }))""")


def test_log_in_start_an_experiment_watch_it_finish_and_open_the_results(
        live_server, celery_worker, page, django_user_model, screenshot_dir):
    django_user_model.objects.create_user("erin", password=PASSWORD)

    # Log in: any page sends us to the login form first.
    page.goto(live_server.url + "/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "erin")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(live_server.url + "/")

    # The new-experiment form comes prefilled with the example comparison; make it small and quick.
    page.click("nav >> text=New experiment")
    page.wait_for_url("**/experiments/new/")
    assert page.input_value("#id_base_model") == "tiny"
    assert page.input_value("#id_task") == "arithmetic"
    assert page.is_checked("input[name=methods][value=sft]") and page.is_checked("#id_rl_from_sft")
    for method in ("dpo", "ppo", "rloo"):
        page.uncheck(f"input[name=methods][value={method}]")
    assert page.is_hidden("fieldset[data-method=ppo]")  # settings of methods not chosen are hidden
    page.fill("#id_name", "E2E: SFT then GRPO")
    page.fill("#id_max_steps", "4")
    page.fill("#id_sft-max_steps", "")  # blank: the experiment's steps
    page.fill("#id_eval_every", "2")
    page.fill("#id_eval_prompts", "4")
    page.fill("#id_eval_samples", "2")
    page.fill("#id_max_new_tokens", "8")
    page.click("button:has-text('Start runs')")
    page.wait_for_url(re.compile(r".*/experiments/\d+/$"))
    assert page.locator(".message.success").inner_text().startswith("Started 2 runs")

    # Two runs; GRPO waits for SFT's model. Watch, without reloading, until both have finished.
    page.evaluate("window.__e2e_marker = 'same page'")
    first = run_cards(page)
    assert [c["label"].split()[0] for c in first] == ["SFT", "GRPO"], first
    seen = {c["id"]: {c["state"]} for c in first}
    deadline = time.monotonic() + 420
    while page.get_attribute("#runs", "data-active") != "false":
        for card in run_cards(page):
            seen[card["id"]].add(card["state"])
        if time.monotonic() > deadline:
            log = celery_worker.log_path.read_text()[-3000:]
            pytest.fail(f"runs did not finish: {run_cards(page)}\nworker log:\n{log}")
        page.wait_for_timeout(500)
    assert page.evaluate("window.__e2e_marker") == "same page"  # updated in place, never reloaded
    cards = run_cards(page)
    for card in cards:
        seen[card["id"]].add(card["state"])
        assert card["state"] == "succeeded", cards
        assert card["percent"] == 100 and card["width"] == "100%", cards
        assert card["steps"] == "step 4 of 4", cards
        assert re.fullmatch(r"-?\d+\.\d{4}", card["reward"]), cards
    grpo = cards[1]
    assert seen[grpo["id"]] - {"succeeded"}, seen  # it was seen waiting, queued or running first
    assert page.is_hidden("#cancel-all")
    # animations="disabled": the bars drawn at their end, not mid-way through their CSS transition
    page.screenshot(path=str(screenshot_dir / "e2e-experiment.png"), full_page=True, animations="disabled")

    # The results of the GRPO run: its last evaluation and the sampled completions.
    page.click(f"[data-run='{grpo['id']}'] h3 a")
    page.wait_for_url(f"**/runs/{grpo['id']}/")
    assert page.locator("h1 .badge").inner_text() == "succeeded"
    evaluation = page.locator("section:has(h2:has-text('Last evaluation')) table").inner_text()
    for key in ("eval/reward", "eval/kl", "eval/length"):
        assert key in evaluation
    samples = page.locator("table.samples tbody tr")
    assert samples.count() == 4 * 2  # eval prompts x samples per prompt, at the last evaluation
    assert "What is" in samples.first.inner_text()
    page.screenshot(path=str(screenshot_dir / "e2e-run.png"), full_page=True, animations="disabled")

    # Its curves and every evaluation's samples: the comparison page, for this one run.
    page.click("text=Curves and all samples")
    page.wait_for_url(f"**/compare/?run={grpo['id']}")
    page.wait_for_function("() => Number(document.getElementById('compare').dataset.drawn || 0) > 0")
    assert page.locator("#summary tbody tr").count() == 1
    assert page.locator("#samples-grid table tbody tr").count() == 4  # the eval prompts
    page.screenshot(path=str(screenshot_dir / "e2e-run-curves.png"), full_page=True, animations="disabled")
