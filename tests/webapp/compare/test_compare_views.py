"""The comparison pages: access, the figures and summary they send, samples side by side (escaped),
the cross-experiment comparison and its warnings, the series cache, and query counts that do not
grow with the number of runs."""

import html
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from webapp.compare import loader
from webapp.compare.core.figures import as_go
from webapp.compare.core.series import Series
from webapp.compare.demo import fill_experiment, fill_run
from webapp.experiments.models import Metric, Run, Sample

pytestmark = pytest.mark.django_db

XSS = '<script>alert(1)</script> and <img src=x onerror=alert(1)>'


@pytest.fixture(autouse=True)
def fresh_cache():
    """The series cache lives in the process; the database does not outlive a test."""
    loader.clear_cache()
    yield
    loader.clear_cache()


def urls(exp) -> list[str]:
    return [reverse(name, args=[exp.pk]) for name in
            ("compare:experiment", "compare:experiment_data", "compare:experiment_samples")]


def count_queries(client, url) -> int:
    loader.clear_cache()
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def traces(figure: dict, kind: str = "run") -> list[dict]:
    return [t for t in figure["data"] if t["meta"]["kind"] == kind]


# --- access ---------------------------------------------------------------------------------------


def test_login_required(client, alice, make_experiment):
    exp = make_experiment(alice)
    for url in [*urls(exp), reverse("compare:runs"), reverse("compare:runs_data"), reverse("compare:runs_samples")]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url


def test_other_users_experiments_are_404(alice_client, alice, bob, make_experiment):
    exp = make_experiment(bob, methods=["sft", "dpo"])
    fill_experiment(exp, steps=20, eval_every=10)
    for url in urls(exp):
        assert alice_client.get(url).status_code == 404, url
    run_ids = ",".join(str(r.pk) for r in exp.runs.all())
    for name in ("compare:runs", "compare:runs_data", "compare:runs_samples"):
        assert alice_client.get(reverse(name) + f"?run={run_ids}").status_code == 404, name
    exp.shared_with.add(alice)
    for url in urls(exp):
        assert alice_client.get(url).status_code == 200, url  # shared with her: she may look


def test_a_foreign_run_among_ones_own_is_404(alice_client, alice, bob, make_experiment):
    mine, theirs = make_experiment(alice), make_experiment(bob)
    ids = f"{mine.runs.get().pk},{theirs.runs.get().pk}"
    assert alice_client.get(reverse("compare:runs") + f"?run={ids}").status_code == 404
    assert alice_client.get(reverse("compare:runs") + "?run=abc").status_code == 404


def test_experiment_page_links_to_the_comparison(alice_client, alice, make_experiment):
    exp = make_experiment(alice)
    html_text = alice_client.get(reverse("experiments:detail", args=[exp.pk])).content.decode()
    assert reverse("compare:experiment", args=[exp.pk]) in html_text


# --- the page and its JSON ------------------------------------------------------------------------


def test_page_shows_summary_controls_and_samples(alice_client, alice, make_experiment):
    exp = make_experiment(alice, name="cmp", methods=["sft", "dpo", "ppo", "grpo"], seeds=2, eval_prompts=3,
                          eval_samples=2)
    fill_experiment(exp, steps=40, eval_every=10)
    page = alice_client.get(reverse("compare:experiment", args=[exp.pk]))
    text = page.content.decode()
    assert page.status_code == 200
    for label in ("SFT", "DPO", "PPO", "GRPO", "Final eval/reward", "Reward gained per nat", "Steps/s", "Tokens",
                  "Wall time", "Samples side by side", "Base model", "vendor/plotly.min.js", "js/compare.js"):
        assert label in text, label
    assert "cdn" not in text.lower()
    summary = page.context["summary"]
    assert [g["label"] for g in summary["groups"]] == ["SFT", "DPO", "PPO", "GRPO"]
    assert all(g["runs"] == 2 for g in summary["groups"])
    assert all("±" in g["cells"][0] for g in summary["groups"])  # two seeds: a confidence interval
    grid = page.context["grid"]
    assert grid["step"] == 40 and grid["steps"] == [0, 10, 20, 30, 40]
    assert [c["label"] for c in grid["columns"]][:3] == ["Base model", "SFT seed 0", "SFT seed 1"]
    assert len(grid["columns"]) == 1 + 8 and len(grid["prompts"]) == 3
    assert all(len(cell) == 2 for p in grid["prompts"] for cell in p["cells"])  # 2 completions per prompt


def test_figures_one_trace_per_run_and_a_band_per_method(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo", "ppo", "grpo"], seeds=2)
    fill_experiment(exp, steps=60, eval_every=10)
    payload = alice_client.get(reverse("compare:experiment_data", args=[exp.pk])).json()
    figs = {f["id"]: f["figure"] for f in payload["figures"]}
    assert list(figs)[:4] == ["reward", "kl", "frontier", "proxy"]
    run_ids = sorted(exp.runs.values_list("pk", flat=True))
    for fid in ("reward", "kl", "frontier"):
        assert sorted(t["meta"]["run"] for t in traces(figs[fid])) == run_ids, fid
    assert len(traces(figs["reward"], "mean")) == len(traces(figs["reward"], "band")) == 3
    assert len(traces(figs["frontier"], "front")) == 3
    # Panels: the loss of every run; DPO's margins, PPO's clip fraction, GRPO's reward spread.
    by_method = {m: sorted(exp.runs.filter(method=m).values_list("pk", flat=True)) for m in ("dpo", "ppo", "grpo")}
    assert sorted(t["meta"]["run"] for t in traces(figs["loss"])) == run_ids
    assert sorted(t["meta"]["run"] for t in traces(figs["dpo_margins"])) == by_method["dpo"]
    assert sorted(t["meta"]["run"] for t in traces(figs["ppo_clipfrac"])) == by_method["ppo"]
    assert sorted(t["meta"]["run"] for t in traces(figs["reward_std"])) == by_method["grpo"]
    # PPO optimised a learned reward (demo): gold and proxy, one each per PPO run.
    assert sorted(t["meta"]["run"] for t in traces(figs["proxy"], "proxy")) == by_method["ppo"]
    for fig in figs.values():
        as_go(fig)  # every figure is valid plotly
    assert payload["active"] is False and payload["sample_steps"] == [0, 10, 20, 30, 40, 50, 60]


def test_reward_curve_values_are_the_logged_ones(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo"])
    fill_experiment(exp, steps=30, eval_every=10)
    run = exp.runs.get()
    logged = list(Metric.objects.filter(run=run, name="eval/reward").order_by("step").values_list("step", "value"))
    payload = alice_client.get(reverse("compare:experiment_data", args=[exp.pk])).json()
    reward = next(f["figure"] for f in payload["figures"] if f["id"] == "reward")
    (trace,) = traces(reward)
    assert trace["x"] == [s for s, _ in logged]
    assert trace["y"] == pytest.approx([v for _, v in logged], rel=1e-5)


@pytest.mark.parametrize("x", ["step", "tokens", "wall"])
def test_x_axis_and_smoothing(alice_client, alice, make_experiment, x):
    exp = make_experiment(alice, methods=["dpo", "ppo"])
    fill_experiment(exp, steps=40, eval_every=10, seconds_per_step=2.0)
    url = reverse("compare:experiment_data", args=[exp.pk])
    payload = alice_client.get(url, {"x": x, "smoothing": "0.8"}).json()
    assert (payload["x"], payload["smoothing"]) == (x, 0.8)
    reward = next(f for f in payload["figures"] if f["id"] == "reward")
    runs = {t["meta"]["run"]: t for t in traces(reward["figure"])}
    dpo = runs[exp.runs.get(method="dpo").pk]
    assert dpo["customdata"][-1][0] == 40  # the step rides along in the hover data
    if x == "tokens":
        assert dpo["x"][-1] == 384 * 40  # train/num_tokens at step 40
        assert exp.runs.get(method="ppo").pk not in runs  # our PPO does not count tokens
        assert reward["missing_x"] == ["PPO seed 0"]
    elif x == "wall":
        assert dpo["x"][0] == 0 and dpo["x"][-1] == pytest.approx(80.0, abs=0.5)
    else:
        assert dpo["x"] == [0, 10, 20, 30, 40]
    assert alice_client.get(url, {"x": "nonsense", "smoothing": "nan"}).json()["x"] == "step"


def test_summary_numbers(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo"], seeds=3)
    fill_experiment(exp, steps=20, eval_every=10)
    finals = [Metric.objects.filter(run=r, name="eval/reward").order_by("-step").first().value for r in exp.runs.all()]
    payload = alice_client.get(reverse("compare:experiment_data", args=[exp.pk])).json()
    (dpo,) = payload["summary"]["groups"]
    mean = sum(finals) / 3
    sd = (sum((f - mean) ** 2 for f in finals) / 2) ** 0.5
    assert dpo["numbers"]["reward"]["mean"] == pytest.approx(mean)
    assert dpo["numbers"]["reward"]["half"] == pytest.approx(4.302652730 * sd / 3 ** 0.5)
    assert dpo["numbers"]["tokens"]["mean"] == pytest.approx(384 * 20)


def test_runs_without_metrics_yet(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "grpo"])
    page = alice_client.get(reverse("compare:experiment", args=[exp.pk]))
    assert page.status_code == 200 and "No samples yet" in page.content.decode()
    payload = alice_client.get(reverse("compare:experiment_data", args=[exp.pk])).json()
    assert payload["active"] is True
    assert [f["id"] for f in payload["figures"]] == ["reward", "kl", "frontier"]
    assert all(f["figure"]["layout"]["annotations"] for f in payload["figures"])  # "No evaluations yet"


def test_a_diverged_run_null_values(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo"])
    fill_experiment(exp, steps=20, eval_every=10)
    run = exp.runs.get()
    Metric.objects.create(run=run, step=21, name="eval/reward", value=None, wall_time=2e9)
    payload = alice_client.get(reverse("compare:experiment_data", args=[exp.pk])).json()
    (trace,) = traces(next(f["figure"] for f in payload["figures"] if f["id"] == "reward"))
    assert trace["x"] == [0, 10, 20]


# --- samples side by side ---------------------------------------------------------------------------


def test_samples_at_a_chosen_step_and_the_latest_before_it(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo", "grpo"], eval_prompts=2, eval_samples=1)
    dpo, grpo = exp.runs.get(method="dpo"), exp.runs.get(method="grpo")
    fill_run(dpo, steps=40, eval_every=10, prompts=2, per_prompt=1)
    fill_run(grpo, steps=40, eval_every=20, prompts=2, per_prompt=1)
    url = reverse("compare:experiment_samples", args=[exp.pk])
    grid = alice_client.get(url, {"step": 30}).json()
    assert grid["steps"] == [0, 10, 20, 30, 40] and grid["step"] == 30
    base, d, g = grid["columns"]
    assert (base["label"], base["step"], d["step"], g["step"]) == ("Base model", 0, 30, 20)
    assert g["note"] == "step 20 (latest by then)"
    row = grid["prompts"][0]
    expected = Sample.objects.get(run=dpo, step=30, prompt_id=0).completion
    assert row["cells"][1] == [{"completion": expected, "reward": pytest.approx(
        Sample.objects.get(run=dpo, step=30, prompt_id=0).reward)}]
    assert alice_client.get(url, {"step": 35}).json()["step"] == 30  # between evaluations: the one before
    assert alice_client.get(url).json()["step"] == 40


def test_completions_are_escaped_in_the_page(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo"], eval_prompts=1, eval_samples=1)
    fill_run(exp.runs.get(), steps=10, eval_every=10, prompts=1, per_prompt=1, completion=lambda *a: XSS)
    Sample.objects.filter(run__experiment=exp).update(prompt=XSS)
    text = alice_client.get(reverse("compare:experiment", args=[exp.pk])).content.decode()
    assert "<script>alert(1)</script>" not in text and "<img src=x" not in text
    assert html.escape(XSS, quote=True) in text or "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("&lt;img src=x onerror=alert(1)&gt;") >= 3  # prompt, base column, the run's column
    # The JSON carries the text as data (the script shows it with textContent).
    grid = alice_client.get(reverse("compare:experiment_samples", args=[exp.pk])).json()
    assert grid["prompts"][0]["cells"][1][0]["completion"] == XSS


def test_user_text_in_figures_is_escaped(alice_client, alice, make_experiment):
    exp1 = make_experiment(alice, name="<b>bold</b> exp", methods=["dpo"])
    exp2 = make_experiment(alice, name="plain", methods=["dpo"])
    fill_experiment(exp1, steps=10, eval_every=10)
    fill_experiment(exp2, steps=10, eval_every=10)
    ids = f"{exp1.runs.get().pk},{exp2.runs.get().pk}"
    payload = alice_client.get(reverse("compare:runs_data") + f"?run={ids}").content.decode()
    assert "<b>bold</b>" not in json.loads(payload)["figures"][0]["figure"]["data"][0]["name"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in json.loads(payload)["figures"][0]["figure"]["data"][0]["name"]


# --- across experiments -----------------------------------------------------------------------------


def test_picker_lists_only_visible_runs(alice_client, alice, bob, make_experiment):
    make_experiment(alice, name="mine", methods=["dpo", "grpo"])
    make_experiment(bob, name="bobs secret", methods=["dpo"])
    shared = make_experiment(bob, name="bobs shared", methods=["ppo"])
    shared.shared_with.add(alice)
    text = alice_client.get(reverse("compare:runs")).content.decode()
    assert "mine" in text and "bobs shared" in text and "bobs secret" not in text
    assert text.count('name="run"') == 3


def test_comparison_across_experiments_with_a_warning(alice_client, alice, make_experiment):
    a = make_experiment(alice, name="arith", task="arithmetic", methods=["dpo"])
    b = make_experiment(alice, name="senti", task="sentiment", methods=["dpo"], eval_prompts=3)
    fill_experiment(a, steps=20, eval_every=10, prompts=2)
    fill_experiment(b, steps=20, eval_every=10, prompts=3)
    ids = f"{a.runs.get().pk},{b.runs.get().pk}"
    response = alice_client.get(reverse("compare:runs") + f"?run={ids}")
    text = response.content.decode()
    assert "These runs may not be comparable" in text
    assert "The gold rewards differ" in text and "The eval prompt sets differ" in text
    assert "arith · DPO seed 0" in text and "senti · DPO seed 0" in text
    payload = alice_client.get(reverse("compare:runs_data") + f"?run={ids}").json()
    reward = payload["figures"][0]["figure"]
    assert len(traces(reward)) == 2 and {g["label"] for g in payload["summary"]["groups"]} == {
        "DPO · arith", "DPO · senti"}  # same method, two experiments: two groups


def test_no_warning_when_runs_are_comparable(alice_client, alice, make_experiment):
    a = make_experiment(alice, name="one", methods=["dpo"])
    b = make_experiment(alice, name="two", methods=["grpo"])
    fill_experiment(a, steps=20, eval_every=10)
    fill_experiment(b, steps=20, eval_every=10)
    ids = f"{a.runs.get().pk}&run={b.runs.get().pk}"
    text = alice_client.get(reverse("compare:runs") + f"?run={ids}").content.decode()
    assert "may not be comparable" not in text


def test_different_prompts_of_the_same_task_are_flagged(alice, make_experiment):
    a = make_experiment(alice, name="one", methods=["dpo"])
    b = make_experiment(alice, name="two", methods=["dpo"])
    fill_experiment(a, steps=10, eval_every=10)
    fill_experiment(b, steps=10, eval_every=10)
    Sample.objects.filter(run__experiment=b, prompt_id=0).update(prompt="Something else entirely")
    warnings = loader.comparability_warnings(loader.picked_runs(alice, [f"{a.runs.get().pk},{b.runs.get().pk}"]))
    assert len(warnings) == 1 and warnings[0].startswith("The eval prompt sets differ: one vs two")


# --- the series cache ---------------------------------------------------------------------------------


def test_polling_sees_new_rows_and_finished_runs_are_not_read_again(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo", "grpo"])
    fill_experiment(exp, steps=40, eval_every=10, running=(exp.runs.get(method="dpo").pk,))
    dpo = exp.runs.get(method="dpo")
    url = reverse("compare:experiment_data", args=[exp.pk])

    def reward_steps():
        payload = alice_client.get(url).json()
        reward = next(f["figure"] for f in payload["figures"] if f["id"] == "reward")
        return {t["meta"]["run"]: t["x"] for t in traces(reward)}

    assert reward_steps()[dpo.pk] == [0, 10, 20]
    Metric.objects.create(run=dpo, step=30, name="eval/reward", value=0.5, wall_time=2e9)
    assert reward_steps()[dpo.pk] == [0, 10, 20, 30]
    # Both finished: one more read, then no metric query at all.
    Run.objects.filter(pk=dpo.pk).update(state=Run.State.SUCCEEDED)
    alice_client.get(url)
    with CaptureQueriesContext(connection) as ctx:
        alice_client.get(url)
    assert not [q for q in ctx.captured_queries if "experiments_metric" in q["sql"]]
    # A new attempt (a resumed run rewrites its steps after the checkpoint) starts afresh.
    Metric.objects.filter(run=dpo, step__gt=10).delete()
    Run.objects.filter(pk=dpo.pk).update(attempts=2, state=Run.State.RUNNING)
    assert reward_steps()[dpo.pk] == [0, 10]


def test_query_count_does_not_grow_with_runs(client, alice, make_experiment, django_assert_num_queries):
    client.force_login(alice)
    small = make_experiment(alice, name="small", methods=["dpo", "ppo"])
    big = make_experiment(alice, name="big", methods=["sft", "dpo", "ppo", "grpo"], seeds=2)
    fill_experiment(small, steps=20, eval_every=10, running=(small.runs.first().pk,))
    fill_experiment(big, steps=20, eval_every=10, running=(big.runs.first().pk,))
    assert big.runs.count() == 8
    for name in ("compare:experiment", "compare:experiment_data", "compare:experiment_samples"):
        expected = count_queries(client, reverse(name, args=[small.pk]))
        loader.clear_cache()
        with django_assert_num_queries(expected):
            assert client.get(reverse(name, args=[big.pk])).status_code == 200
    ids = list(big.runs.values_list("pk", flat=True)) + list(small.runs.values_list("pk", flat=True))
    two = count_queries(client, reverse("compare:runs") + f"?run={ids[0]},{ids[-1]}")
    ten = count_queries(client, reverse("compare:runs") + "?run=" + ",".join(map(str, ids)))
    assert two == ten


def test_a_failed_read_leaves_no_partial_series(alice, make_experiment, monkeypatch):
    exp = make_experiment(alice, methods=["dpo"])
    fill_experiment(exp, steps=40, eval_every=10)
    runs = loader.experiment_runs(exp)
    original, calls = Series.add, []

    def flaky(self, *args):
        calls.append(1)
        if len(calls) == 50:
            raise RuntimeError("connection lost")
        return original(self, *args)

    monkeypatch.setattr(Series, "add", flaky)
    with pytest.raises(RuntimeError):
        loader.load_series(runs)
    monkeypatch.setattr(Series, "add", original)
    series = loader.load_series(runs)[runs[0].pk]
    assert [p[0] for p in series["eval/reward"].points] == [0, 10, 20, 30, 40]
    assert [p[0] for p in series["train/loss"].points] == list(range(1, 41))


def test_a_finished_comparison_is_sent_again_as_it_was(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["dpo", "grpo"])
    fill_experiment(exp, steps=20, eval_every=10)
    url = reverse("compare:experiment_data", args=[exp.pk])
    first = alice_client.get(url, {"x": "wall"}).content
    with CaptureQueriesContext(connection) as ctx:
        again = alice_client.get(url, {"x": "wall"}).content
    assert again == first
    assert not [q for q in ctx.captured_queries if "experiments_metric" in q["sql"] or "experiments_sample" in q["sql"]]
    assert alice_client.get(url, {"x": "step"}).content != first  # another axis: other figures


# --- the human-rating leaderboard (issue 5, item 4) --------------------------------------------------


def test_compare_page_shows_the_rating_leaderboard(alice_client, alice, bob):
    from webapp.ratings.demo import make_demo_experiment, simulate_votes

    exp = make_demo_experiment(alice, prompts=4, samples=1)
    simulate_votes(exp, [alice], 12)
    page = alice_client.get(reverse("compare:experiment", args=[exp.pk])).content.decode()
    assert 'id="ratings-board"' in page and "ratings-fig-win-rate" in page
    assert "js/leaderboard.js" in page and "css/ratings.css" in page
    assert reverse("ratings:index") in page  # the Rating link in the navigation
    assert 'id="ratings-board"' not in alice_client.get(reverse("compare:runs")).content.decode()


def test_the_page_states_the_verdicts_from_the_runs_samples(client, alice, make_experiment):
    """Paired on the same prompts at the final evaluation; PPO's demo ceiling is far above SFT's."""
    client.force_login(alice)
    exp = make_experiment(alice, methods=["sft", "ppo"], seeds=3)
    fill_experiment(exp, steps=20, eval_every=10, prompts=12, per_prompt=4, proxy_methods=())
    table = loader.verdicts_table(loader.experiment_runs(exp))
    (row,) = table["rows"]
    assert row["sentence"].startswith("PPO beats SFT by ") and row["significant"]
    page = client.get(reverse("compare:experiment", args=[exp.pk])).content.decode()
    assert 'id="verdicts"' in page and html.escape(row["sentence"]) in page


def test_the_form_shows_the_detectable_difference_and_updates_it(client, alice):
    client.force_login(alice)
    page = client.get(reverse("experiments:new")).content.decode()
    assert 'id="detectable"' in page and "must differ by about" in page
    few = client.get(reverse("compare:detectable"), {"prompts": 10, "samples": 2, "seeds": 1}).json()
    many = client.get(reverse("compare:detectable"), {"prompts": 200, "samples": 16, "seeds": 5}).json()
    assert many["detectable"] < few["detectable"]
    assert client.get(reverse("compare:detectable"), {"prompts": "x"}).status_code == 200


def test_over_optimisation_is_flagged_on_the_run_and_compare_pages(client, alice, make_experiment):
    """The demo's PPO optimises a proxy whose gold reward turns down halfway; DPO's does not."""
    client.force_login(alice)
    exp = make_experiment(alice, methods=["dpo", "ppo"])
    fill_experiment(exp, steps=100, eval_every=10, proxy_methods=("ppo",))
    ppo, dpo = exp.runs.get(method="ppo"), exp.runs.get(method="dpo")
    page = client.get(reverse("compare:experiment", args=[exp.pk])).content.decode()
    assert 'id="flags"' in page and "PPO seed 0: over-optimisation" in page and "DPO seed 0: over" not in page
    assert "over-optimisation" in client.get(reverse("experiments:run", args=[ppo.pk])).content.decode()
    assert 'id="flags"' not in client.get(reverse("experiments:run", args=[dpo.pk])).content.decode()


def test_the_page_shows_the_reward_at_equal_kl(client, alice, make_experiment):
    client.force_login(alice)
    exp = make_experiment(alice, methods=["dpo", "ppo"], seeds=2)
    fill_experiment(exp, steps=40, eval_every=10, proxy_methods=())
    stats = loader.statistics(loader.experiment_runs(exp))
    assert [r["label"] for r in stats["equal_kl"]["rows"]] == ["DPO", "PPO"] and stats["equal_kl"]["budgets"]
    page = client.get(reverse("compare:experiment", args=[exp.pk])).content.decode()
    assert 'id="equal-kl"' in page and f"KL ≤ {stats['equal_kl']['budgets'][-1]}" in page
