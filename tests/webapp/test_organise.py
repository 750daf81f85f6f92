"""Organising and finding experiments: rename, notes (Markdown, safe), tags, stars, archive, delete with
its files after a confirmation; the list's search, filters, sort, best-reward column and pages, with a
query count that does not grow with 1,000 experiments."""

from __future__ import annotations

import re
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from webapp.experiments.models import Experiment, Metric, Run, Sample, Tag
from webapp.ratings.models import Vote

pytestmark = pytest.mark.django_db


def names(client, **params) -> list[str]:
    response = client.get(reverse("experiments:list"), params)
    assert response.status_code == 200
    return [e.name for e in response.context["experiments"]]


def log(run: Run, step: int, value: float | None, name: str = "eval/reward") -> None:
    Metric.objects.create(run=run, step=step, name=name, value=value, wall_time=time.time())


# --- rename, notes, tags ---------------------------------------------------------------------------------


def test_owner_renames_writes_notes_and_tags(alice_client, alice, make_experiment):
    exp = make_experiment(alice, name="old")
    url = reverse("experiments:edit", args=[exp.pk])
    assert alice_client.get(url).status_code == 200
    response = alice_client.post(url, {"name": "  new name ", "notes": "**why**", "tags": "Baseline, kl-sweep baseline"})
    assert response.status_code == 302
    exp.refresh_from_db()
    assert exp.name == "new name" and exp.notes == "**why**"
    assert sorted(t.name for t in exp.tags.all()) == ["baseline", "kl-sweep"]
    html = alice_client.get(exp.get_absolute_url()).content.decode()
    assert "<strong>why</strong>" in html and "kl-sweep" in html


def test_bad_tags_and_blank_name_are_refused(alice_client, alice, make_experiment):
    exp = make_experiment(alice, name="kept")
    url = reverse("experiments:edit", args=[exp.pk])
    response = alice_client.post(url, {"name": " ", "notes": "", "tags": "<b>x</b>"})
    assert response.status_code == 200
    assert set(response.context["form"].errors) == {"name", "tags"}
    exp.refresh_from_db()
    assert exp.name == "kept" and not Tag.objects.exists()


@pytest.mark.parametrize("hostile", [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))",
    "[x](JAVASCRIPT:alert(1))", "[x](data:text/html;base64,PHNjcmlwdD4=)", "<a href='javascript:x'>y</a>",
    "![p](http://tracker.example/p.png)",
])
def test_notes_never_carry_html_or_script_links(alice_client, alice, make_experiment, hostile):
    exp = make_experiment(alice, notes=f"Hello\n\n{hostile}\n\n- a list")
    html = alice_client.get(exp.get_absolute_url()).content.decode()
    notes = html.split('id="notes">', 1)[1].split("</section>", 1)[0]
    assert "<script" not in notes and "<img" not in notes and "onerror=" not in notes.replace("onerror=alert", "")
    assert 'href="javascript' not in notes.lower() and 'href="data:' not in notes.lower()
    assert "<li>a list</li>" in notes


def test_only_the_owner_edits_archives_or_deletes(client, alice, bob, make_experiment):
    exp = make_experiment(alice, name="alices")
    exp.shared_with.add(bob)
    client.force_login(bob)
    assert client.get(reverse("experiments:edit", args=[exp.pk])).status_code == 404
    assert client.post(reverse("experiments:edit", args=[exp.pk]), {"name": "mine"}).status_code == 404
    assert client.post(reverse("experiments:archive", args=[exp.pk]), {"archived": "1"}).status_code == 404
    assert client.get(reverse("experiments:delete", args=[exp.pk])).status_code == 404
    assert client.post(reverse("experiments:delete", args=[exp.pk])).status_code == 404
    exp.refresh_from_db()
    assert exp.name == "alices" and not exp.archived
    # a sharee may star it: their own star
    assert client.post(reverse("experiments:star", args=[exp.pk]), {"starred": "1"}).status_code == 302
    assert list(exp.starred_by.all()) == [bob]


def test_strangers_get_404_even_for_a_star(client, alice, bob, make_experiment):
    exp = make_experiment(alice)
    client.force_login(bob)
    assert client.post(reverse("experiments:star", args=[exp.pk]), {"starred": "1"}).status_code == 404
    assert not exp.starred_by.exists()


def test_get_never_writes(alice_client, alice, make_experiment):
    exp = make_experiment(alice)
    for name in ("star", "archive"):
        assert alice_client.get(reverse(f"experiments:{name}", args=[exp.pk])).status_code == 405
    assert alice_client.get(reverse("experiments:delete", args=[exp.pk])).status_code == 200
    assert Experiment.objects.filter(pk=exp.pk).exists()


def test_star_redirects_back_to_the_list_with_its_filters_but_never_off_site(alice_client, alice, make_experiment):
    exp = make_experiment(alice)
    url = reverse("experiments:star", args=[exp.pk])
    back = reverse("experiments:list") + "?q=exp&sort=name"
    assert alice_client.post(url, {"starred": "1", "next": back})["Location"] == back
    assert alice_client.post(url, {"starred": "0", "next": "https://evil.example/"})["Location"] == exp.get_absolute_url()
    assert not exp.starred_by.exists()


# --- archive and delete ----------------------------------------------------------------------------------


def test_archived_experiments_leave_the_list_until_asked_for(alice_client, alice, make_experiment):
    make_experiment(alice, name="kept")
    gone = make_experiment(alice, name="shelved")
    alice_client.post(reverse("experiments:archive", args=[gone.pk]), {"archived": "1"})
    assert names(alice_client) == ["kept"]
    assert names(alice_client, archived="only") == ["shelved"]
    assert sorted(names(alice_client, archived="all")) == ["kept", "shelved"]
    alice_client.post(reverse("experiments:archive", args=[gone.pk]), {"archived": "0"})
    assert sorted(names(alice_client)) == ["kept", "shelved"]


def _finished_with_files(make_experiment, owner, artifact_root, **fields) -> Experiment:
    exp = make_experiment(owner, methods=["sft", "dpo"], **fields)
    for run in exp.runs.all():
        folder = run.model_dir
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
        log(run, 0, 0.1)
        log(run, 2, 0.5)
        Sample.objects.create(run=run, step=2, prompt_id=0, prompt="p", completion="c", reward=1.0)
    exp.runs.update(state=Run.State.SUCCEEDED)
    return exp


def test_delete_confirmation_says_what_goes_then_removes_rows_and_files(
        alice_client, alice, bob, make_experiment, artifact_root, django_capture_on_commit_callbacks):
    exp = _finished_with_files(make_experiment, alice, artifact_root)
    other = _finished_with_files(make_experiment, alice, artifact_root, name="other")
    run_a, run_b = exp.runs.all()
    Vote.objects.create(experiment=exp, rater=bob, step=2, prompt_id=0, first=str(min(run_a.pk, run_b.pk)),
                        second=str(max(run_a.pk, run_b.pk)), left_is_first=True, outcome="a")
    folders = [r.model_dir.parent for r in exp.runs.all()]
    url = reverse("experiments:delete", args=[exp.pk])
    page = alice_client.get(url)
    gone = page.context["gone"]
    assert (gone["runs"], gone["metrics"], gone["samples"], gone["votes"], gone["files"], gone["bytes"]) == (
        2, 4, 2, 1, 2, 2000)
    html = page.content.decode()
    assert "2.0\xa0KB" in html and "cannot be undone" in html
    assert all(f.is_dir() for f in folders)  # looking deleted nothing
    with django_capture_on_commit_callbacks(execute=True):  # the files go once the rows' deletion commits
        response = alice_client.post(url)
    assert response.status_code == 302 and response["Location"] == reverse("experiments:list")
    assert not Experiment.objects.filter(pk=exp.pk).exists()
    assert not Run.objects.filter(experiment_id=exp.pk).exists() and not Vote.objects.exists()
    assert Metric.objects.filter(run__experiment=other).count() == 4
    assert not any(f.exists() for f in folders)
    assert all(r.model_dir.is_dir() for r in other.runs.all())


def test_delete_confirmation_counts_rounds_and_judge_jobs(alice_client, alice, make_experiment, artifact_root):
    from webapp.ratings.models import JudgeJob, Round

    exp = _finished_with_files(make_experiment, alice, artifact_root)
    url = reverse("experiments:delete", args=[exp.pk])
    html = alice_client.get(url).content.decode()
    assert 'data-gone="rounds"' not in html and 'data-gone="judge_jobs"' not in html  # nothing to say
    Round.objects.create(experiment=exp, number=2)
    JudgeJob.objects.create(experiment=exp, requested_by=alice, model="tiny", state="done")
    page = alice_client.get(url)
    assert (page.context["gone"]["rounds"], page.context["gone"]["judge_jobs"]) == (1, 1)
    html = page.content.decode()
    assert "<b>1</b> rating round after the first" in html and "<b>1</b> judge job<" in html
    alice_client.post(url)
    assert not Round.objects.exists() and not JudgeJob.objects.exists()


def test_delete_is_refused_while_runs_may_still_write(alice_client, alice, make_experiment):
    exp = make_experiment(alice)  # its run is queued
    page = alice_client.get(reverse("experiments:delete", args=[exp.pk]))
    assert page.context["gone"]["active"] == 1 and "cancel it first" in page.content.decode()
    alice_client.post(reverse("experiments:delete", args=[exp.pk]))
    assert Experiment.objects.filter(pk=exp.pk).exists()


def test_delete_never_leaves_the_artifact_root(alice_client, alice, make_experiment, tmp_path,
                                               django_capture_on_commit_callbacks):
    exp = make_experiment(alice)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep").write_text("x")
    exp.runs.update(out_dir=str(outside), state=Run.State.FAILED)
    assert alice_client.get(reverse("experiments:delete", args=[exp.pk])).context["gone"]["files"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("experiments:delete", args=[exp.pk]))
    assert not Experiment.objects.filter(pk=exp.pk).exists()
    assert (outside / "keep").exists()


# --- search, filters, sort, best reward, pages -----------------------------------------------------------


def test_search_by_name_tag_model_task_and_method(alice_client, alice, make_experiment):
    a = make_experiment(alice, name="Sentiment sweep", task="sentiment", methods=["sft", "grpo"])
    make_experiment(alice, name="Arithmetic", base_model="SmolLM2-135M", methods=["dpo"])
    a.tags.add(Tag.objects.create(name="baseline"))
    assert names(alice_client, q="sweep") == ["Sentiment sweep"]
    assert names(alice_client, q="BASELINE") == ["Sentiment sweep"]
    assert names(alice_client, q="smollm2") == ["Arithmetic"]
    assert names(alice_client, q="sentiment") == ["Sentiment sweep"]
    assert names(alice_client, q="GRPO") == ["Sentiment sweep"]
    assert names(alice_client, q="dpo") == ["Arithmetic"]
    assert names(alice_client, q="sentiment grpo") == ["Sentiment sweep"]  # every word
    assert names(alice_client, q="sentiment dpo") == []
    assert names(alice_client, q="%") == [] and names(alice_client, q="_") == []


def test_filters_state_owner_tag_and_starred(alice_client, alice, bob, make_experiment):
    mine = make_experiment(alice, name="mine")
    theirs = make_experiment(bob, name="theirs")
    theirs.shared_with.add(alice)
    make_experiment(bob, name="hidden")  # not shared: never listed
    done = make_experiment(alice, name="done")
    done.runs.update(state=Run.State.SUCCEEDED)
    Run.objects.filter(experiment=mine).update(state=Run.State.RUNNING)
    mine.tags.add(Tag.objects.create(name="ablation"))
    theirs.starred_by.add(alice)
    assert sorted(names(alice_client)) == ["done", "mine", "theirs"]
    assert names(alice_client, state="running") == ["mine"]
    assert names(alice_client, state="finished") == ["done"]
    assert names(alice_client, state="queued") == ["theirs"]
    assert names(alice_client, owner="shared") == ["theirs"]
    assert sorted(names(alice_client, owner="me")) == ["done", "mine"]
    assert names(alice_client, tag="ablation") == ["mine"]
    assert names(alice_client, starred="on") == ["theirs"]
    assert sorted(names(alice_client, state="bogus", sort="bogus")) == ["done", "mine", "theirs"]  # ignored


def test_tag_filter_lists_only_tags_of_visible_experiments(alice_client, alice, bob, make_experiment):
    make_experiment(alice).tags.add(Tag.objects.create(name="mine"))
    make_experiment(bob).tags.add(Tag.objects.create(name="bobs-secret"))
    html = alice_client.get(reverse("experiments:list")).content.decode()
    assert "mine" in html and "bobs-secret" not in html


def test_best_reward_is_the_best_final_eval_reward(alice_client, alice, make_experiment):
    exp = make_experiment(alice, name="scored", methods=["sft", "dpo", "grpo"])
    runs = {r.method: r for r in exp.runs.all()}
    sft, dpo, grpo = runs["sft"], runs["dpo"], runs["grpo"]
    log(sft, 0, 0.1)
    log(sft, 2, 0.9)
    log(sft, 4, 0.3)  # final 0.3: the 0.9 on the way does not count
    log(dpo, 0, 0.2)
    log(dpo, 4, 0.6)  # final 0.6: the best
    log(dpo, 4, 5.0, name="eval/kl")
    log(grpo, 0, 0.7)
    log(grpo, 2, None)  # diverged: no final reward
    make_experiment(alice, name="unscored")
    low = make_experiment(alice, name="low")
    log(low.runs.get(), 2, 0.05)
    rows = {e.name: e.best_reward for e in alice_client.get(reverse("experiments:list")).context["experiments"]}
    assert rows == {"scored": pytest.approx(0.6), "unscored": None, "low": pytest.approx(0.05)}
    assert names(alice_client, sort="-reward") == ["scored", "low", "unscored"]
    assert names(alice_client, sort="reward") == ["low", "scored", "unscored"]


def test_sort_by_name_and_age(alice_client, alice, make_experiment):
    for n in ("b", "a", "c"):
        make_experiment(alice, name=n)
    assert names(alice_client) == ["c", "a", "b"]
    assert names(alice_client, sort="name") == ["a", "b", "c"]
    assert names(alice_client, sort="created") == ["b", "a", "c"]


def many_experiments(owner, n: int, runs_each: int = 2) -> None:
    """`n` experiments with runs and final rewards, inserted in bulk."""
    now = time.time()
    exps = Experiment.objects.bulk_create(
        [Experiment(owner=owner, name=f"bulk {i:05d}", methods=["sft", "dpo"][:runs_each], base_model="tiny",
                    task="arithmetic") for i in range(n)], batch_size=500)
    exps = list(Experiment.objects.filter(owner=owner).order_by("id"))
    runs = Run.objects.bulk_create(
        [Run(experiment=e, method=m, config={}, state=Run.State.SUCCEEDED) for e in exps
         for m in ["sft", "dpo"][:runs_each]], batch_size=500)
    runs = list(Run.objects.filter(experiment__owner=owner).order_by("id"))
    Metric.objects.bulk_create(
        [Metric(run=r, step=s, name="eval/reward", value=(r.pk % 97) / 100 + s, wall_time=now)
         for r in runs for s in (0, 1)], batch_size=1000)
    tag = Tag.objects.create(name=f"t-{owner.username}")
    Experiment.tags.through.objects.bulk_create(
        [Experiment.tags.through(experiment=e, tag=tag) for e in exps[::3]], batch_size=500)


def test_list_pages_and_query_count_is_pinned_with_a_thousand_experiments(client, alice, bob):
    many_experiments(bob, 3)
    for e in Experiment.objects.filter(owner=bob):
        e.shared_with.add(alice)
    client.force_login(alice)
    url = reverse("experiments:list")
    with CaptureQueriesContext(connection) as small:
        assert client.get(url).status_code == 200
    many_experiments(alice, 1000)
    Experiment.objects.filter(owner=alice, name__endswith="7").update(archived=True)
    Experiment.objects.get(name="bulk 00001", owner=alice).starred_by.add(alice)
    for params in ({}, {"q": "bulk 00", "sort": "-reward"}, {"tag": "t-alice", "state": "finished", "page": "2"},
                   {"owner": "shared", "archived": "all"}, {"sort": "name", "page": "9"}):
        with CaptureQueriesContext(connection) as big:
            response = client.get(url, params)
        assert response.status_code == 200
        assert len(big.captured_queries) == len(small.captured_queries), [q["sql"] for q in big.captured_queries]
    assert len(small.captured_queries) <= 7  # session, user, tags, count, page, its tags (+ savepoints none)
    page = client.get(url).context["page"]
    assert page.paginator.count == 900 + 3 and len(page.object_list) == 50
    response = client.get(url, {"sort": "name", "page": 2})
    expected = list(Experiment.objects.filter(archived=False).order_by("name", "-id").values_list("name", flat=True))
    assert [e.name for e in response.context["experiments"]] == expected[50:100]
    html = response.content.decode()
    assert "?sort=name&amp;page=3" in html and "?sort=name&amp;page=1" in html


# --- the new-experiment form's baselines (its script marks what differs) ---------------------------------


def test_form_fields_carry_the_experiments_values_and_the_defaults(alice_client, alice, make_experiment):
    new = alice_client.get(reverse("experiments:new")).content.decode()
    assert 'name="dpo-learning_rate"' in new and 'data-baseline="5e-05"' in new  # the example's
    assert 'data-default="0.0002"' in new
    source = make_experiment(alice, methods=["sft", "dpo"], hyperparams={"dpo": {"beta": 0.25, "max_steps": 7}})
    clone = alice_client.get(reverse("experiments:clone", args=[source.pk])).content.decode()
    beta = re.search(r'<input[^>]*name="dpo-beta"[^>]*>', clone).group(0)
    steps = re.search(r'<input[^>]*name="dpo-max_steps"[^>]*>', clone).group(0)
    assert 'data-baseline="0.25"' in beta and 'data-baseline="7"' in steps


def test_started_one_run_grammar(alice_client):
    from tests.webapp.conftest import form_data

    response = alice_client.post(reverse("experiments:new"), form_data(methods=["sft"], rl_from_sft=None), follow=True)
    assert "Started 1 run." in response.content.decode()
