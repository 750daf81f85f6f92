"""The comparison page in a real browser (Debian's Chromium), on runs written straight into the
database (no training): every chart drawn with one trace per run, the controls redraw them, a run
that trains shows up without a reload, the samples grid is there, and model output that looks like
HTML is shown as text and never executed — neither as rendered by the server nor as re-rendered by
the script when the step slider moves. Also the comparison across experiments with its warning.

PTLAB_UPDATE_DOCS_SCREENSHOT=1 also writes docs/compare.png (the README's screenshot)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from webapp.compare import loader
from webapp.compare.demo import fill_run
from webapp.experiments.models import Experiment, Metric, Run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-compare-123"
SCRIPT = "<script>window.__xss = 1; alert(1)</script>"
IMG = '<img src=x onerror="window.__xss = 2; alert(1)">'
ROOT = Path(__file__).resolve().parents[2]

PLOTS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(p => ({
    id: p.closest('[data-chart]').dataset.chart,
    n: p.data.length,
    runs: p.data.filter(t => t.meta && t.meta.kind === 'run').map(t => t.meta.run).sort((a, b) => a - b),
    kinds: p.data.map(t => t.meta && t.meta.kind),
    xtitle: p.layout.xaxis.title.text,
}))"""


def make_experiment(owner, name: str, task: str, methods: list[str], seeds: int) -> tuple[Experiment, list[Run]]:
    """An experiment and its runs as rows (nothing is sent to a broker)."""
    exp = Experiment.objects.create(owner=owner, name=name, task=task, methods=methods, seeds=seeds, max_steps=200,
                                    eval_every=20, eval_prompts=3, eval_samples=2)
    runs = [Run.objects.create(experiment=exp, method=m, seed=s, config=exp.run_config(m, s), state="queued")
            for m in methods for s in range(seeds)]
    return exp, runs


def log_in(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base_url + "/")


def wait_js(page, expression: str, timeout: int = 20_000) -> None:
    """Wait until `expression` (or a `() => ...` function) is true in the page. Polled from here with
    page.evaluate: Playwright's wait_for_function evaluates a string with eval, which the page's CSP forbids."""
    function = expression if expression.lstrip().startswith("()") else f"() => ({expression})"
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(function):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def wait_drawn(page, after: int = 0) -> int:
    page.wait_for_function(f"() => Number(document.getElementById('compare').dataset.drawn || 0) > {after}")
    return int(page.get_attribute("#compare", "data-drawn"))


@pytest.fixture(autouse=True)
def fresh_cache():
    loader.clear_cache()
    yield
    loader.clear_cache()


def test_compare_page_draws_every_chart_and_shows_samples_as_text(live_server, page, django_user_model,
                                                                     screenshot_dir):
    user = django_user_model.objects.create_user("cara", password=PASSWORD)
    exp, runs = make_experiment(user, "SFT vs DPO vs PPO vs GRPO", "sentiment", ["sft", "dpo", "ppo", "grpo"], 2)
    by = {(r.method, r.seed): r for r in runs}

    def completion_of(run):
        def completion(step, prompt_id, index):
            if run is by["dpo", 1] and prompt_id == 0 and index == 0:
                return f"{SCRIPT} {IMG} (step {step})"  # model output that looks like HTML
            return f"Answer {prompt_id}.{index} at step {step}: it is {prompt_id + 2}."
        return completion

    for run in runs:
        fill_run(run, steps=200, eval_every=20, prompts=3, per_prompt=2, proxy=run.method == "ppo",
                 completion=completion_of(run))
    # One run is still training: its last evaluation has not come yet.
    live = by["grpo", 1]
    Run.objects.filter(pk=live.pk).update(state=Run.State.RUNNING)
    last_eval = list(Metric.objects.filter(run=live, step=200, name__startswith="eval/"))
    Metric.objects.filter(pk__in=[m.pk for m in last_eval]).delete()
    ids = sorted(r.pk for r in runs)
    of = {m: sorted(r.pk for r in runs if r.method == m) for m in ("sft", "dpo", "ppo", "grpo")}

    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.add_init_script("window.__xss = 0;")
    log_in(page, live_server.url, "cara")
    page.goto(live_server.url + f"/experiments/{exp.pk}/")
    page.click("text=Compare runs")
    page.wait_for_url(f"**/experiments/{exp.pk}/compare/")
    drawn = wait_drawn(page)

    plots = {p["id"]: p for p in page.evaluate(PLOTS)}
    assert list(plots)[:4] == ["reward", "kl", "frontier", "proxy"], list(plots)
    for chart in ("reward", "kl", "frontier"):
        assert plots[chart]["runs"] == ids, (chart, plots[chart])  # one trace per run
    assert plots["reward"]["kinds"].count("mean") == 4 and plots["reward"]["kinds"].count("band") == 4
    assert plots["frontier"]["kinds"].count("front") == 4  # a Pareto front per method
    assert plots["proxy"]["runs"] == of["ppo"] and plots["proxy"]["kinds"].count("proxy") == 2
    assert plots["loss"]["runs"] == ids
    assert plots["dpo_margins"]["runs"] == plots["dpo_accuracies"]["runs"] == of["dpo"]
    for chart in ("ppo_value_loss", "ppo_clipfrac", "ppo_approxkl"):
        assert plots[chart]["runs"] == of["ppo"], chart
    assert plots["reward_std"]["runs"] == of["grpo"]
    assert plots["completion_length"]["runs"] == sorted(of["ppo"] + of["grpo"])
    assert all(p["xtitle"] == "step" for i, p in plots.items() if i not in ("frontier", "gao"))  # x: KL there

    # The summary table: one row per method, a confidence interval from the two seeds.
    rows = page.locator("#summary tbody tr")
    assert rows.count() == 4
    assert "±" in rows.nth(1).locator('[data-col="0"]').inner_text()

    # Samples: prompts down, the base model and every run across; hostile text shown, not run.
    grid = page.locator("#samples-grid table")
    assert grid.locator("tbody tr").count() == 3
    assert grid.locator("thead th").count() == 1 + 1 + 8
    assert grid.locator("thead th").nth(1).inner_text().startswith("Base model")
    assert page.get_by_text(SCRIPT, exact=False).count() >= 1
    assert page.locator("#samples-grid img").count() == 0 and page.locator("#samples-grid script").count() == 0

    # The slider: an earlier evaluation, re-rendered by the script (textContent, never HTML).
    page.eval_on_selector("#sample-step", "el => { el.value = 2; el.dispatchEvent(new Event('input')); "
                                          "el.dispatchEvent(new Event('change')); }")
    page.wait_for_function("() => document.getElementById('compare').dataset.sampleStep === '40'")
    assert page.locator("#sample-step-value").inner_text() == "step 40"
    assert "(step 40)" in page.locator("#samples-grid").inner_text()
    assert page.get_by_text(SCRIPT, exact=False).count() >= 1
    assert page.locator("#samples-grid img").count() == 0 and page.locator("#samples-grid script").count() == 0

    # The x axis and the smoothing are applied by the server; every chart is redrawn.
    page.click(".segmented label:has-text('tokens seen')")
    drawn = wait_drawn(page, drawn)
    plots = {p["id"]: p for p in page.evaluate(PLOTS)}
    assert plots["reward"]["xtitle"] == "tokens seen"
    assert plots["reward"]["runs"] == sorted(of["sft"] + of["dpo"] + of["grpo"])  # our PPO counts no tokens
    page.eval_on_selector("#smoothing", "el => { el.value = 0.6; el.dispatchEvent(new Event('input')); }")
    drawn = wait_drawn(page, drawn)
    assert page.locator("#smoothing-value").inner_text() == "0.60"
    assert "x=tokens" in page.url and "smoothing=0.6" in page.url
    page.click(".segmented label:has-text('step')")
    drawn = wait_drawn(page, drawn)

    # The run still training: its last evaluation appears without a reload (polling).
    assert page.is_visible("#live")
    page.evaluate("window.__same_page = true")
    for metric in last_eval:
        metric.pk = None
    Metric.objects.bulk_create(last_eval)
    wait_js(
        page,
        f"""() => {{ const p = document.getElementById('plot-reward');
                    const t = p.data.find(t => t.meta && t.meta.run === {live.pk});
                    return t && t.customdata[t.customdata.length - 1][0] === 200; }}""", timeout=15_000)
    Run.objects.filter(pk=live.pk).update(state=Run.State.SUCCEEDED)
    page.wait_for_function("() => document.getElementById('compare').dataset.active === 'false'", timeout=15_000)
    assert page.is_hidden("#live") and page.evaluate("window.__same_page") is True

    assert page.evaluate("window.__xss") == 0 and dialogs == []
    page.eval_on_selector("#sample-step", "el => { el.value = el.max; el.dispatchEvent(new Event('input')); "
                                          "el.dispatchEvent(new Event('change')); }")
    page.wait_for_function("() => document.getElementById('compare').dataset.sampleStep === '200'")
    page.wait_for_timeout(500)  # let plotly finish its transitions before the picture
    full = screenshot_dir / "compare.png"
    page.screenshot(path=str(full), full_page=True)
    top = screenshot_dir / "compare-top.png"
    page.screenshot(path=str(top), clip={"x": 0, "y": 0, "width": 1280, "height": 1720}, full_page=True)
    height = page.evaluate("document.documentElement.scrollHeight")
    for i, y in enumerate(range(0, height, 1600)):  # the whole page in pieces, to look at
        page.screenshot(path=str(screenshot_dir / f"compare-part{i}.png"), full_page=True,
                        clip={"x": 0, "y": y, "width": 1280, "height": min(1600, height - y)})
    if os.environ.get("PTLAB_UPDATE_DOCS_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(top, ROOT / "docs" / "compare.png")
    assert page.evaluate("window.__xss") == 0 and dialogs == []


def test_comparison_across_experiments_warns_when_tasks_differ(live_server, page, django_user_model, screenshot_dir):
    user = django_user_model.objects.create_user("dev", password=PASSWORD)
    a, a_runs = make_experiment(user, "arithmetic, DPO", "arithmetic", ["dpo"], 1)
    b, b_runs = make_experiment(user, "sentiment, GRPO", "sentiment", ["grpo"], 1)
    for run in a_runs + b_runs:
        fill_run(run, steps=100, eval_every=20, prompts=3, per_prompt=1)
    log_in(page, live_server.url, "dev")
    page.goto(live_server.url + f"/experiments/{a.pk}/compare/")
    wait_drawn(page)
    page.click("text=Add runs from other experiments")
    page.wait_for_url("**/compare/?run=*")
    assert page.is_visible("#picker")
    page.click("#picker summary")
    page.check(f"input[name=run][value='{b_runs[0].pk}']")
    page.click("button:has-text('Compare the chosen runs')")
    page.wait_for_url("**/compare/?run=*&run=*")
    wait_drawn(page)
    warning = page.locator("#warnings")
    assert warning.is_visible()
    assert "gold rewards differ" in warning.inner_text() and "eval prompt sets differ" in warning.inner_text()
    plots = {p["id"]: p for p in page.evaluate(PLOTS)}
    assert plots["reward"]["runs"] == sorted(r.pk for r in a_runs + b_runs)
    headers = page.locator("#samples-grid thead th").all_inner_texts()
    assert any(h.startswith("arithmetic, DPO · DPO seed 0") for h in headers)
    assert any(h.startswith("sentiment, GRPO · GRPO seed 0") for h in headers)
    page.screenshot(path=str(screenshot_dir / "compare-across.png"), full_page=True)
