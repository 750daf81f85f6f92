"""Reports in a real browser: the HTML file opened with the network cut off draws every chart, and the
PDF (printed by headless Chromium) holds the method names, the summary figures and the leaderboard on
the pages expected, with page numbers. Needs /usr/bin/chromium and poppler's pdftotext (skipped when
missing, except on CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from tests.webapp.reports_fixtures import XSS, make_report_experiment
from webapp.reports import formats
from webapp.reports.report import build_report

pytestmark = pytest.mark.django_db

missing = [what for what, ok in (("chromium", os.access(formats.CHROMIUM, os.X_OK)),
                                 ("pdftotext", shutil.which("pdftotext") and shutil.which("pdfinfo"))) if not ok]
if missing and not os.environ.get("CI"):
    pytestmark = [pytestmark, pytest.mark.skip(reason=f"missing: {', '.join(missing)}")]


@pytest.fixture
def exp(alice):
    carol = User.objects.create_user("carol", password="pw-carol-123")
    return make_report_experiment(alice, [alice, carol], steps=60, votes=40)


def pdf_pages(path) -> list[str]:
    n = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True,
                                                         check=True).stdout).group(1))
    return [subprocess.run(["pdftotext", "-layout", "-f", str(k), "-l", str(k), str(path), "-"], capture_output=True,
                           text=True, check=True).stdout for k in range(1, n + 1)]


def test_pdf_holds_methods_summary_and_leaderboard_with_page_numbers(alice_client, exp, tmp_path):
    response = alice_client.get(reverse("reports:export", args=[exp.pk, "pdf"]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    path = tmp_path / "report.pdf"
    path.write_bytes(response.content)
    pages = pdf_pages(path)
    text = "\n".join(pages)
    n = len(pages)
    # summary and per-run tables on page 1, verdicts and reward at equal KL, five pages of charts at most,
    # then one section per page break: human rating (leaderboard and heatmaps), samples, configurations and
    # environment
    assert 6 <= n <= 12, n
    for k, page in enumerate(pages, 1):
        assert re.search(rf"page {k} of {n}\b", page), f"no page number on page {k}"
    doc = build_report(exp)
    summary = formats.report_summary(doc)
    first = pages[0]
    for group in summary["groups"]:
        assert group["label"] in first
        for cell in group["cells"]:
            if cell != "–":
                assert cell.replace(" ", "") in first.replace(" ", ""), cell
    for label in ("SFT seed 0", "DPO seed 1", "GRPO seed 0", "PPO seed 1"):
        assert label in text
    rating = next(p for p in pages if "Human rating" in p)
    for row in doc["leaderboard"]["rows"]:
        if row["votes"]:
            assert row["label"] in rating and f"{row['bt_score']:.0f}" in rating
    assert "Samples at step 60" in text and "Run configurations" in text and "Code revision" in text
    assert '<img src=x onerror="window.__xss=1">' in text  # model output printed as text


def test_html_offline_draws_every_chart(alice_client, exp, tmp_path):
    from playwright.sync_api import sync_playwright

    page_html = alice_client.get(reverse("reports:export", args=[exp.pk, "html"])).content.decode()
    expected = page_html.count('data-fig="')
    assert expected >= 10  # reward, KL, frontier, proxy, loss, method panels, two heatmaps
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    outside = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=formats.CHROMIUM, args=formats.CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1300, "height": 900})

            def only_files(route):
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            context.route("**/*", only_files)
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_function("window.reportReady === true", timeout=30000)
            state = page.evaluate("""() => ({
                error: window.reportError || null, xss: window.__xss || null,
                figs: document.querySelectorAll('[data-fig]').length,
                drawn: document.querySelectorAll('[data-fig][data-drawn="true"]').length,
                svgs: [...document.querySelectorAll('[data-fig]')].filter(d => d.querySelector('.main-svg')).length,
                traces: [...document.querySelectorAll('[data-fig]')].map(d => (d.data || []).length),
                rows: document.querySelectorAll('#leaderboard tbody tr').length,
            })""")
            # interactive: not a static plot, with Plotly's mode bar (zoom, pan, download) and drag layer
            interactive = page.evaluate("""() => {
                const gd = document.querySelector('[data-fig="fig-reward"]');
                return {static: gd._context.staticPlot, modebar: !!gd.querySelector('.modebar'),
                        drag: !!gd.querySelector('.nsewdrag')};
            }""")
        finally:
            browser.close()
    assert not errors and state["error"] is None and state["xss"] is None
    assert state["figs"] == state["drawn"] == state["svgs"] == expected
    assert all(n > 0 for n in state["traces"])
    assert state["rows"] == 9  # 8 runs and the base model
    assert outside == []
    assert interactive["static"] is False and interactive["modebar"] and interactive["drag"]
    assert XSS not in page_html
