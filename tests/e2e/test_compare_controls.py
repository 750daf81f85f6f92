"""The comparison page's controls in a real browser (Debian's Chromium): a log-scale toggle on every chart
that survives the polls, long legends wrapped below the chart, a distinct colour for every run across
experiments, and placing runs that start from the SFT model after it on the step axis."""

from __future__ import annotations

import time

import pytest

from webapp.compare import loader
from webapp.compare.demo import fill_run
from webapp.experiments.models import Experiment, Run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-controls-123"
TRACES = """() => Object.fromEntries(Array.from(document.querySelectorAll('[data-chart]')).map(card => {
    const p = card.querySelector('.js-plotly-plot');
    return [card.dataset.chart, {
        log: p.layout.yaxis.type, legend: card.dataset.legend, orientation: p.layout.legend.orientation || 'v',
        runs: p.data.filter(t => t.meta && t.meta.kind === 'run').map(t => ({run: t.meta.run, x: t.x,
              color: t.line && t.line.color}))}];
}))"""


def log_in(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base_url + "/")


def drawn(page) -> int:
    return int(page.get_attribute("#compare", "data-drawn") or 0)


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def make(owner, name: str, seeds: int, *, from_sft: bool = False) -> tuple[Experiment, list[Run]]:
    exp = Experiment.objects.create(owner=owner, name=name, task="arithmetic", methods=["sft", "dpo", "grpo"],
                                    seeds=seeds, max_steps=100, eval_every=20, eval_prompts=2, eval_samples=1,
                                    rl_from_sft=from_sft)
    runs = []
    for seed in range(seeds):
        sft = None
        for method in ("sft", "dpo", "grpo"):
            run = Run.objects.create(experiment=exp, method=method, seed=seed, config=exp.run_config(method, seed),
                                     depends_on=sft if from_sft else None)
            fill_run(run, steps=100, eval_every=20, prompts=2, per_prompt=1)
            sft = sft or run
            runs.append(run)
    return exp, runs


def test_log_toggle_legend_colours_and_chain(live_server, page, django_user_model, screenshot_dir):
    loader.clear_cache()
    user = django_user_model.objects.create_user("kim", password=PASSWORD)
    a, runs_a = make(user, "Arithmetic with a long descriptive experiment name", 3, from_sft=True)
    b, runs_b = make(user, "The same methods again with other settings", 3)
    Run.objects.filter(pk=runs_b[-1].pk).update(state=Run.State.RUNNING)  # the page keeps polling
    log_in(page, live_server.url, "kim")
    ids = ",".join(str(r.pk) for r in runs_a + runs_b)
    page.goto(live_server.url + f"/compare/?run={ids}")
    wait_until(lambda: drawn(page) > 0)
    charts = page.evaluate(TRACES)

    # Every run its own colour, across the two experiments.
    colours = [r["color"] for r in charts["reward"]["runs"]]
    assert len(colours) == 18 and len(set(colours)) == 18

    # 18 runs: the legend goes below the chart, wrapped; the plot keeps its width.
    assert charts["reward"]["legend"] == "below" and charts["reward"]["orientation"] == "h"
    page.screenshot(path=str(screenshot_dir / "compare_legend_below.png"), full_page=False)

    # Log scale on the KL chart only; it stays after the next polls.
    page.click("[data-chart=kl] .log-toggle")
    wait_until(lambda: page.evaluate(TRACES)["kl"]["log"] == "log")
    assert page.evaluate(TRACES)["reward"]["log"] != "log"
    before = drawn(page)
    wait_until(lambda: drawn(page) >= before + 2)  # two polls later
    assert page.evaluate(TRACES)["kl"]["log"] == "log"
    assert page.get_attribute("[data-chart=kl] .log-toggle", "aria-pressed") == "true"
    page.locator("[data-chart=kl]").screenshot(path=str(screenshot_dir / "compare_kl_log.png"))
    page.click("[data-chart=kl] .log-toggle")
    wait_until(lambda: page.evaluate(TRACES)["kl"]["log"] != "log")

    # Runs that start from the SFT model, placed after it.
    dpo_a = next(r for r in runs_a if r.method == "dpo" and r.seed == 0)
    x_of = lambda: next(r["x"] for r in page.evaluate(TRACES)["reward"]["runs"] if r["run"] == dpo_a.pk)  # noqa: E731
    assert x_of()[0] == 0
    page.check("#chain")
    wait_until(lambda: x_of()[0] == 100)
    assert "chain=1" in page.url
    page.screenshot(path=str(screenshot_dir / "compare_chained.png"), full_page=False)
