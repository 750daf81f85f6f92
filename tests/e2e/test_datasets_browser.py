"""A user's own data through a real browser: upload a CSV, map its columns, preview it (chat template,
token-length histogram), then launch an experiment on it that a real worker trains."""

from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PASSWORD = "pw-e2e-data-123"


def test_upload_map_preview_and_launch(live_server, celery_worker, page, django_user_model, screenshot_dir,
                                       tmp_path):
    from webapp.experiments.models import Experiment

    django_user_model.objects.create_user("dana", password=PASSWORD)
    csv = tmp_path / "sums.csv"
    csv.write_text("q,worked,result\n" + "".join(f"What is {a} + {b}?,{a} + {b} = {a + b},{a + b}\n"
                                                 for a in range(6) for b in range(5)))
    page.goto(live_server.url + "/")
    page.fill("#id_username", "dana")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(live_server.url + "/")

    page.click("nav >> text=Datasets")
    page.click("text=Add a dataset")
    page.fill("#id_name", "sums")
    page.set_input_files("#id_file", str(csv))
    page.click("button:has-text('Save and preview')")
    page.wait_for_url(re.compile(r".*/datasets/\d+/$"))
    assert "nothing yet" in page.inner_text("main")  # no column name to guess from

    page.select_option("#id_prompt", "q")
    page.select_option("#id_completion", "worked")
    page.select_option("#id_answer", "result")
    page.click("button:has-text('Save mapping')")
    page.wait_for_url(re.compile(r".*/datasets/\d+/$"))
    assert "sft, ppo, grpo, rloo" in page.inner_text("main")
    first = page.locator(".preview-row pre").first.inner_text()
    assert "<|im_start|>user\nWhat is 0 + 0?" in first and "<|im_start|>assistant\n0 + 0 = 0" in first
    page.wait_for_selector("#length-histogram .main-svg")  # Plotly drew the histogram
    page.screenshot(path=str(screenshot_dir / "dataset-preview.png"), full_page=True)

    page.click("nav >> text=New experiment")
    page.fill("#id_name", "E2E: my data")
    page.select_option("#id_saved_dataset", label="sums")
    for method in ("dpo", "ppo", "rloo"):
        page.uncheck(f"input[name=methods][value={method}]")
    page.uncheck("#id_rl_from_sft")
    for field, value in (("max_steps", "2"), ("sft-max_steps", ""), ("eval_every", "2"), ("eval_prompts", "2"),
                         ("eval_samples", "2"), ("max_new_tokens", "4")):
        page.fill(f"#id_{field}", value)
    # Signals from the registry: a verifier as the gold signal, another one as GRPO's training signal.
    page.select_option("#id_gold_reward", "numeric_match")
    assert page.is_visible("#id_gold_reward-numeric_match-tolerance")  # the chosen kind's parameters, typed
    assert not page.is_visible("#id_gold_reward-judge-template")
    page.fill("#id_gold_reward-numeric_match-tolerance", "0.5")
    page.select_option("#id_grpo-reward", "length")
    page.fill("#id_grpo-reward-length-target", "3")
    page.select_option("#id_grpo-reward-length-unit", "chars")
    page.locator("section.card:has(#field-gold_reward)").screenshot(path=str(screenshot_dir / "experiment-gold.png"))
    page.locator('fieldset[data-method="grpo"]').screenshot(path=str(screenshot_dir / "experiment-grpo-signal.png"))
    page.focus("button:has-text('Start runs')")  # after a screenshot, headless Chromium drops the first click here
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/experiments/\d+/$"))
    exp = Experiment.objects.get(name="E2E: my data")
    assert exp.saved_dataset.name == "sums"
    grpo = exp.runs.get(method="grpo").config
    assert grpo["gold_reward"] == {"kind": "numeric_match", "tolerance": 0.5}
    assert grpo["reward"] == {"kind": "length", "target": 3, "unit": "chars"}
    deadline = time.monotonic() + 300
    while page.get_attribute("#runs", "data-active") != "false":
        if time.monotonic() > deadline:
            pytest.fail(f"runs did not finish:\n{celery_worker.log_path.read_text()[-3000:]}")
        page.wait_for_timeout(500)
    assert sorted(r.state for r in exp.runs.all()) == ["succeeded", "succeeded"]
    assert all(r.config["dataset"]["mapping"]["prompt"] == "q" for r in exp.runs.all())
    assert all(r.config["dataset"]["hash"] == exp.saved_dataset.content_hash for r in exp.runs.all())
    grpo = exp.runs.get(method="grpo")
    assert grpo.metrics.filter(name="eval/proxy_reward").exists() and grpo.metrics.filter(name="eval/reward").exists()

    # Over-optimisation is visible: the compare page draws GRPO's gold and proxy reward side by side.
    page.goto(live_server.url + f"/experiments/{exp.pk}/compare/")
    page.wait_for_function("Number(document.getElementById('compare').dataset.drawn || 0) > 0")
    proxy = page.evaluate("""() => { const p = document.querySelector('[data-chart="proxy"] .js-plotly-plot');
        return p ? p.data.map(t => [t.name, t.meta && t.meta.kind]) : null; }""")
    assert proxy is not None, "no proxy chart"
    assert [kind for _, kind in proxy] == ["run", "proxy"] and all("GRPO" in name for name, _ in proxy), proxy
    page.locator('[data-chart="proxy"]').scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "compare-proxy.png"), full_page=True)
