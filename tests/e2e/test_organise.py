"""Organising experiments in a real browser (Debian's Chromium): search and filters on the list, tags and
notes written on the edit page (and hostile notes shown as text), star and archive, and deleting an
experiment after a confirmation page that says what goes. Runs are rows written straight into the
database (no training)."""

from __future__ import annotations

import pytest

from webapp.compare.demo import fill_run
from webapp.experiments.models import Experiment, Run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-organise-123"


def make(owner, name: str, task: str, methods: list[str], state: str = Run.State.SUCCEEDED, root=None) -> Experiment:
    exp = Experiment.objects.create(owner=owner, name=name, task=task, methods=methods, max_steps=40, eval_every=20,
                                    eval_prompts=2, eval_samples=1)
    for m in methods:
        run = Run.objects.create(experiment=exp, method=m, config=exp.run_config(m, 0), state="queued")
        if root is not None:
            run.out_dir = str(root / "runs" / str(run.pk))
            run.save(update_fields=["out_dir"])
        fill_run(run, steps=40, eval_every=20, prompts=2, per_prompt=1, state=state)
    return exp


def log_in(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base_url + "/")


def listed(page) -> list[str]:
    return page.eval_on_selector_all("#experiments [data-field=name]", "els => els.map(e => e.textContent.trim())")


def test_search_filter_tag_star_archive_and_delete(live_server, page, django_user_model, screenshot_dir,
                                                   artifact_root):
    user = django_user_model.objects.create_user("olga", password=PASSWORD)
    other = django_user_model.objects.create_user("pete", password=PASSWORD)
    arith = make(user, "Arithmetic baseline", "arithmetic", ["sft", "dpo"], root=artifact_root)
    senti = make(user, "Sentiment with GRPO", "sentiment", ["sft", "grpo"])
    live = make(user, "Still training", "arithmetic", ["ppo"], state=Run.State.RUNNING)
    shared = make(other, "Pete's KL sweep", "sentiment", ["rloo"])
    shared.shared_with.add(user)
    make(other, "Pete's private work", "arithmetic", ["sft"])
    folders = [run.model_dir.parent for run in arith.runs.all()]
    for run in arith.runs.all():
        run.model_dir.mkdir(parents=True)
        (run.model_dir / "model.safetensors").write_bytes(b"w" * 4096)

    log_in(page, live_server.url, "olga")
    assert sorted(listed(page)) == sorted(["Arithmetic baseline", "Sentiment with GRPO", "Still training",
                                           "Pete's KL sweep"])
    rewards = page.eval_on_selector_all("#experiments [data-field=reward]", "els => els.map(e => e.textContent.trim())")
    assert all(r.replace(".", "").isdigit() for r in rewards)  # every one has a best final reward

    # Search by method, then filter by state and owner, then sort by reward.
    page.fill("input[name=q]", "grpo")
    page.click("#filters button:has-text('Apply')")
    page.wait_for_url("**/?q=grpo*")
    assert listed(page) == ["Sentiment with GRPO"]
    page.click("#filters >> text=Clear")
    page.select_option("select[name=state]", "running")
    page.click("#filters button:has-text('Apply')")
    page.wait_for_url("**state=running*")
    assert listed(page) == ["Still training"]
    page.select_option("select[name=state]", "")
    page.select_option("select[name=owner]", "shared")
    page.click("#filters button:has-text('Apply')")
    page.wait_for_url("**owner=shared*")
    assert listed(page) == ["Pete's KL sweep"]
    page.goto(live_server.url + "/?sort=-reward")
    shown = page.eval_on_selector_all("#experiments [data-field=reward]", "els => els.map(e => Number(e.textContent))")
    assert shown == sorted(shown, reverse=True)

    # Rename, tag and describe an experiment; hostile notes are shown as text.
    page.goto(live_server.url + arith.get_absolute_url())
    page.click("summary:has-text('More')")
    page.click("text=Rename, notes, tags")
    page.fill("#id_name", "Arithmetic: SFT vs DPO")
    page.fill("#id_tags", "baseline, paper-fig-2")
    page.fill("#id_notes", "## Why\n\nCheck **DPO** against SFT.\n\n<img src=x onerror=\"window.__xss=1\">\n"
                           "[click](javascript:window.__xss=2)")
    page.screenshot(path=str(screenshot_dir / "experiment_edit.png"), full_page=True)
    page.click("button:has-text('Save')")
    page.wait_for_url("**" + arith.get_absolute_url())
    assert page.inner_text("#notes h2") == "Why"
    assert page.inner_text("#notes strong") == "DPO"
    assert "<img src=x" in page.inner_text("#notes")  # as text
    assert page.evaluate("window.__xss") is None and page.locator("#notes img").count() == 0
    assert page.locator("#notes a").count() == 0  # the javascript: link is not a link
    assert page.locator("#tags .tag").all_inner_texts() == ["baseline", "paper-fig-2"]
    page.screenshot(path=str(screenshot_dir / "experiment_notes_tags.png"), full_page=True)

    # Filter by the tag from the list; star it.
    page.goto(live_server.url + "/")
    page.select_option("select[name=tag]", "paper-fig-2")
    page.click("#filters button:has-text('Apply')")
    page.wait_for_url("**tag=paper-fig-2*")
    assert listed(page) == ["Arithmetic: SFT vs DPO"]
    page.click(f"tr[data-experiment='{arith.pk}'] button.star")
    page.wait_for_url("**tag=paper-fig-2*")  # back to the same filtered list
    assert page.inner_text(f"tr[data-experiment='{arith.pk}'] button.star") == "★"
    page.goto(live_server.url + "/?starred=on")
    assert listed(page) == ["Arithmetic: SFT vs DPO"]

    # Archive one: it leaves the list, and is found under "Archived only".
    page.goto(live_server.url + senti.get_absolute_url())
    page.click("summary:has-text('More')")
    page.click("button:has-text('Archive')")
    page.wait_for_url("**" + senti.get_absolute_url())
    page.goto(live_server.url + "/")
    assert "Sentiment with GRPO" not in listed(page)
    page.select_option("select[name=archived]", "only")
    page.click("#filters button:has-text('Apply')")
    page.wait_for_url("**archived=only*")
    assert listed(page) == ["Sentiment with GRPO"]
    page.goto(live_server.url + "/?q=bert")
    assert page.locator("#no-match").is_visible()
    page.goto(live_server.url + "/?sort=name")
    page.screenshot(path=str(screenshot_dir / "experiment_list.png"), full_page=True)

    # Delete: the confirmation says what goes; a running experiment cannot be deleted.
    page.goto(live_server.url + f"/experiments/{live.pk}/delete/")
    assert page.is_disabled("button:has-text('Delete the experiment')")
    page.goto(live_server.url + arith.get_absolute_url())
    page.click("summary:has-text('More')")
    page.click("text=Delete…")
    page.wait_for_url(f"**/experiments/{arith.pk}/delete/")
    summary = page.inner_text("#delete-summary")
    assert "2 runs" in summary and "12 samples" in summary and "390 metric points" in summary
    assert "2 files (8.0\xa0KB)" in summary
    page.screenshot(path=str(screenshot_dir / "experiment_delete.png"), full_page=True)
    page.click("button:has-text('Delete the experiment and its files')")
    page.wait_for_url(live_server.url + "/")
    assert "Deleted" in page.inner_text(".messages")
    assert not Experiment.objects.filter(pk=arith.pk).exists()
    assert not any(f.exists() for f in folders)
    assert "Arithmetic: SFT vs DPO" not in listed(page)
