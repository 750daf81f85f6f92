"""In a browser: the owner votes, builds a vote dataset, starts the next round from the leaderboard's
button; once round 2's runs have samples (written here: no training in a browser test), they are in the
arena beside round 1 and on the rounds page."""

from __future__ import annotations

import pytest

from webapp.experiments.models import Run, Sample
from webapp.ratings.arena import Arena
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.models import RatingSetup, Round, VoteDataset

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "pw-e2e-owner-123"


def test_vote_build_the_dataset_start_round_two_and_see_it(live_server, page, django_user_model, tmp_path,
                                                           screenshot_dir):
    owner = django_user_model.objects.create_user("olga", password=PASSWORD)
    exp = make_demo_experiment(owner, name="Loop", methods=("sft", "dpo"), prompts=4, steps=(0, 10), samples=1)
    for run in exp.runs.all():
        run.out_dir = str(tmp_path / f"run{run.pk}")
        run.save(update_fields=["out_dir"])
    RatingSetup.objects.create(experiment=exp, reveal=RatingSetup.Reveal.AT_END)
    page.goto(f"{live_server.url}/accounts/login/?next=/experiments/{exp.pk}/rate/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}/experiments/{exp.pk}/rate/")
    for _ in range(8):  # vote "A" eight times
        page.wait_for_selector('#arena[data-state="ready"]')
        page.keyboard.press("1")
        page.wait_for_selector('#arena[data-state="revealed"], #arena[data-state="ready"]')
        page.keyboard.press("Enter")

    page.goto(f"{live_server.url}/experiments/{exp.pk}/vote-datasets/")
    page.select_option("#id_disagree", "majority")
    page.click("button:has-text('Build the dataset')")
    page.wait_for_selector("#vote-dataset-versions")
    assert "v1" in page.text_content("#vote-dataset-versions")
    vote_set = VoteDataset.objects.get(experiment=exp)
    assert vote_set.policy["disagree"] == "majority" and vote_set.dataset.rows > 0

    page.goto(f"{live_server.url}/experiments/{exp.pk}/leaderboard/")
    page.click("#next-round button")
    page.wait_for_url(f"{live_server.url}/experiments/{exp.pk}/rounds/")
    round_ = Round.objects.get(experiment=exp, number=2)
    assert sorted(r.method for r in round_.runs.all()) == ["dpo", "ppo", "reward"]
    # Round 2 trains (not here): give its policies a final evaluation.
    for run in round_.runs.exclude(method="reward"):
        Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED, step=10, total=10)
        Sample.objects.bulk_create([Sample(run=run, step=10, prompt_id=p, index=0, prompt=f"What is {p} + 1?",
                                           completion=f"{p + 1} ({run.method} round 2)", reward=1.0)
                                    for p in range(4)])
    arena = Arena(exp)
    assert sum(arena.label(k).startswith("Round 2: ") for k in arena.contestants) == 2
    page.reload()
    page.wait_for_selector("#round-2")
    text = page.text_content("#round-2")
    assert "Round 2: PPO from" in text and "Round 2: DPO from" in text and "cost" in text
    page.screenshot(path=str(screenshot_dir / "ratings-rounds.png"), full_page=True)
    # ... and the arena serves them: a rater meets round 2's answers
    page.goto(f"{live_server.url}/experiments/{exp.pk}/rate/")
    seen = set()
    for _ in range(12):
        page.wait_for_selector('#arena[data-state="ready"], #arena[data-state="done"]')
        if page.get_attribute("#arena", "data-state") == "done":
            break
        seen |= {page.text_content("#text-a"), page.text_content("#text-b")}
        page.keyboard.press("2")
        page.wait_for_selector('#arena[data-state="revealed"], #arena[data-state="ready"]')
        page.keyboard.press("Enter")
    assert any("round 2" in t for t in seen), seen


def test_the_owner_lets_a_judge_vote_and_follows_it(live_server, page, django_user_model, screenshot_dir):
    """The leaderboard's judge form queues a job ("more" is disabled before any calibration); the job runs
    (here, in this process: the try worker's code) while the page polls it, then links the calibration."""
    from webapp.ratings.demo import simulate_votes
    from webapp.ratings.judge_jobs import do_run_judge_job
    from webapp.ratings.models import JudgeJob

    owner = django_user_model.objects.create_user("jude", password=PASSWORD)
    exp = make_demo_experiment(owner, name="Judged", methods=("sft", "dpo"), prompts=3, steps=(0, 10), samples=1)
    assert simulate_votes(exp, [owner], 6, seed=3) > 0
    page.goto(f"{live_server.url}/accounts/login/?next=/experiments/{exp.pk}/leaderboard/")
    page.fill("#id_username", "jude")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{live_server.url}/experiments/{exp.pk}/leaderboard/")
    assert page.is_disabled("#judge-form input[value=more]")
    page.select_option("#id_model", "tiny")
    page.check("#judge-form input[value=calibrate]")
    page.click("#judge-form button[type=submit]")
    page.wait_for_selector("#job [data-field=state]")
    job = JudgeJob.objects.get(experiment=exp)
    assert page.text_content("#job [data-field=state]") == "queued"

    assert do_run_judge_job(job.pk) == "done"
    page.wait_for_selector("#job [data-field=result]:not([hidden])")
    assert page.text_content("#job [data-field=state]") == "done" and "votes" in page.text_content("#job")
    page.click("#job [data-field=link]")
    page.wait_for_selector("#judges")
    assert "pairwise_judge:tiny" in page.text_content("#judges")
    page.screenshot(path=str(screenshot_dir / "ratings-judge.png"), full_page=True)
