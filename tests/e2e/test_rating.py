"""Blind rating in a real browser: an invited rater casts 10 votes with the keyboard; before each vote
neither the page (its whole DOM) nor the responses it fetched name the run, method or seed behind either
completion; each vote reveals them; the leaderboard then counts the 10 votes."""

from __future__ import annotations

import re

import pytest

from webapp.ratings.arena import Arena
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.models import Invitation, Vote

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-e2e-rater-123"
KEYS = ["1", "2", "3", "4", "1", "2", "1", "3", "2", "4"]  # A, B, tie, both bad, ...
OUTCOMES = {"1": "a", "2": "b", "3": "tie", "4": "both_bad"}


def forbidden_patterns(exp) -> list[re.Pattern]:
    """What would unblind a pair: run labels and ids, method names, seeds, the base model's label."""
    words = {"seed", "base model", "sft", "dpo", "grpo", "ppo", "rloo"}
    patterns = [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in words]
    for run in exp.runs.all():
        patterns += [re.compile(re.escape(run.label), re.IGNORECASE), re.compile(rf"#{run.pk}\b"),
                     re.compile(rf"\brun[ _-]?{run.pk}\b", re.IGNORECASE)]
    return patterns


def assert_blind(text: str, patterns, where: str) -> None:
    for pattern in patterns:
        match = pattern.search(text)
        assert match is None, f"{where} reveals {match.group(0)!r}: ...{text[max(0, match.start() - 80):match.end() + 80]}..."


def test_a_rater_votes_ten_times_with_the_keyboard_blind_then_the_leaderboard_counts_them(
        live_server, page, django_user_model, screenshot_dir, monkeypatch):
    # Repeats replace an earlier vote (one row per rater and item); none here, so 10 votes are 10 rows.
    monkeypatch.setattr("webapp.ratings.arena.REPEAT_SHARE", 0.0)
    owner = django_user_model.objects.create_user("olga", password=PASSWORD)
    rater = django_user_model.objects.create_user("rita", password=PASSWORD)
    exp = make_demo_experiment(owner, name="Arithmetic arena", methods=("sft", "dpo", "grpo"), prompts=6,
                               steps=(0, 20), samples=2)
    Invitation.objects.create(experiment=exp, rater=rater, invited_by=owner)
    patterns = forbidden_patterns(exp)

    fetched = []  # bodies of the item responses, checked like the DOM
    page.on("response", lambda r: fetched.append(r) if "/rate/next.json" in r.url else None)

    rate_url = f"{live_server.url}/experiments/{exp.pk}/rate/"
    page.goto(f"{live_server.url}/accounts/login/?next=/experiments/{exp.pk}/rate/")
    page.fill("#id_username", "rita")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(rate_url)

    arena = Arena(exp)
    labels = {arena.label(key) for key in arena.contestants}  # "GRPO (#3)": what each is, no step number
    for n, key in enumerate(KEYS):
        page.wait_for_selector('#arena[data-state="ready"]')
        assert_blind(page.evaluate("document.documentElement.outerHTML"), patterns, f"the DOM before vote {n + 1}")
        for response in fetched:
            assert_blind(response.text(), patterns, f"{response.url} before vote {n + 1}")
        fetched.clear()
        assert page.text_content("#text-a").strip() and page.text_content("#text-b").strip()
        assert page.text_content("#prompt").startswith("What is")
        if n == 0:
            page.screenshot(path=str(screenshot_dir / "ratings-rate.png"), full_page=True)

        page.keyboard.press(key)
        page.wait_for_selector('#arena[data-state="revealed"]')
        shown = (page.text_content("#reveal-a"), page.text_content("#reveal-b"))
        assert all(any(text.startswith(label) for label in labels) for text in shown), shown
        assert page.is_visible("#reveal-a") and page.is_visible("#reveal-b")
        assert page.is_visible(f'[data-outcome="{OUTCOMES[key]}"].chosen')
        if n == 0:
            page.screenshot(path=str(screenshot_dir / "ratings-rate-revealed.png"), full_page=True)
        assert f"You have rated {n + 1} of" in page.text_content("#progress")
        page.keyboard.press("Enter")

    page.wait_for_selector('#arena[data-state="ready"]')
    votes = Vote.objects.filter(experiment=exp, rater=rater)
    assert votes.count() == 10
    assert sorted(v.outcome for v in votes) == sorted(OUTCOMES[k] for k in KEYS)
    assert len({(v.first, v.second) for v in votes}) == 6  # all 6 pairs of 4 contestants (3 runs + base) covered

    page.click("a:has-text('Leaderboard')")
    page.wait_for_url(f"{live_server.url}/experiments/{exp.pk}/leaderboard/")
    page.wait_for_selector("[data-plotly-json='ratings-fig-win-rate'] .main-svg")
    page.wait_for_selector("[data-plotly-json='ratings-fig-pair-votes'] .main-svg")
    meta = page.text_content(".page-head .meta")
    assert re.search(r"Votes\s+10\b", meta), meta
    rows = page.eval_on_selector_all(".leaderboard-table tbody tr", """rows => rows.map(r => ({
        key: r.dataset.contestant, votes: Number(r.querySelector('td:nth-last-child(2)').textContent)}))""")
    assert len(rows) == 4 and sum(r["votes"] for r in rows) == 20  # each vote counts for both of its contestants
    rater_row = page.locator(".ratings-board table.compact tbody tr", has_text="rita")
    assert rater_row.locator("td").nth(1).text_content().strip() == "10"
    page.screenshot(path=str(screenshot_dir / "ratings-leaderboard.png"), full_page=True)
