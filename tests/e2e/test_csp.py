"""The Content-Security-Policy in a real browser (issue 13): the main pages, plotly charts included, load
and work with no violation reported by Chromium (securitypolicyviolation events and console errors)."""

from __future__ import annotations

import pytest

from webapp.compare.demo import fill_experiment
from webapp.experiments.actions import do_create_experiment
from webapp.experiments.models import Experiment
from webapp.ratings.demo import make_demo_experiment, simulate_votes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-csp-12345"
LISTEN = """() => { window.__csp = []; document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sourceFile || '') + ':' + e.lineNumber)); }"""


@pytest.fixture
def no_broker(monkeypatch):
    monkeypatch.setattr("webapp.experiments.actions.send_to_workers", lambda *a, **kw: None)


def test_main_pages_report_no_csp_violation(live_server, strict_page, django_user_model, no_broker):
    page = strict_page
    user = django_user_model.objects.create_user("csp", password=PASSWORD)
    exp = do_create_experiment(Experiment(owner=user, name="CSP", base_model="tiny", task="arithmetic",
                                          methods=["sft", "dpo"], seeds=1, max_steps=40, eval_every=20, eval_prompts=3,
                                          eval_samples=1, max_new_tokens=8, queue="train", hyperparams={}))
    fill_experiment(exp, steps=40, eval_every=20, prompts=3, per_prompt=1)
    rated = make_demo_experiment(user, name="CSP arena", prompts=3, steps=(0, 10))
    simulate_votes(rated, [user], 6)
    run = exp.runs.first()

    violations, console_errors = [], []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.add_init_script(f"({LISTEN})()")
    base = live_server.url
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", "csp")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base + "/")

    urls = ["/", "/experiments/new/", f"/experiments/{exp.pk}/", f"/runs/{run.pk}/",
            f"/experiments/{exp.pk}/compare/", f"/compare/?run={run.pk}", "/workers/", "/ratings/",
            f"/experiments/{rated.pk}/rate/", f"/experiments/{rated.pk}/leaderboard/",
            f"/experiments/{rated.pk}/raters/", "/reports/import/", "/accounts/tokens/", "/api/docs/",
            f"/experiments/{exp.pk}/edit/", f"/experiments/{exp.pk}/delete/", f"/runs/{run.pk}/try/",
            "/?q=CSP&sort=-reward"]
    for url in urls:
        response = page.goto(base + url)
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
        if "compare" in url or "leaderboard" in url or url == f"/runs/{run.pk}/":
            page.wait_for_selector(".js-plotly-plot", timeout=20_000)  # plotly drew under the policy
        if url.endswith("/rate/"):
            page.wait_for_selector("#text-a:not(:empty)")
            page.click("button[data-outcome='a']")
            page.wait_for_selector("#arena[data-state='revealed']")
        violations += [f"{url}: {v}" for v in page.evaluate("window.__csp || []")]
    assert not violations, violations
    assert not [e for e in console_errors if "Content Security Policy" in e or "Refused" in e], console_errors
