"""A sweep through the app's actions (no broker, no training: each trial's metrics and samples are
the demo's, written as a worker would, then the run ends through do_finish_run): each method gets its
budget of trials, one after the other, each proposed from the ones before; the compare page shows
best-of-budget with the winners compared on the test half of the prompts only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from training.config import ConfigError
from webapp.compare import demo, loader
from webapp.experiments.actions import do_create_experiment, do_finish_run
from webapp.experiments.models import Experiment, Run
from webapp.experiments.sweeps import split

pytestmark = pytest.mark.django_db


def sweep_experiment(owner, **sweep) -> Experiment:
    exp = Experiment(owner=owner, name="Sweep", base_model="tiny", task="arithmetic", methods=["dpo", "ppo"],
                     seeds=1, max_steps=20, eval_every=10, eval_prompts=10, eval_samples=2, max_new_tokens=8,
                     sweep={"trials": 3, "sampler": "random", **sweep})
    return do_create_experiment(exp)


def train_queued(exp: Experiment) -> list[Run]:
    """Every queued run 'trains' (demo metrics and samples) and succeeds through do_finish_run."""
    done = []
    for run in exp.runs.filter(state=Run.State.QUEUED):
        Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, attempts=1)
        run.refresh_from_db()
        demo.fill_run(run, steps=20, eval_every=10, prompts=10, per_prompt=2, state=Run.State.RUNNING)
        run.refresh_from_db()
        assert do_finish_run(run, Run.State.SUCCEEDED)
        done.append(run)
    return done


def test_each_method_gets_the_same_budget_of_trials_one_after_another(alice, django_capture_on_commit_callbacks,
                                                                       enqueued):
    with django_capture_on_commit_callbacks(execute=True):
        exp = sweep_experiment(alice)
    assert len(enqueued) == 2  # the first trial of each method, in parallel
    first = list(exp.runs.order_by("pk"))
    assert [(r.method, r.trial, r.state) for r in first] == [("dpo", 0, "queued"), ("ppo", 0, "queued")]
    assert first[0].config["learning_rate"] != exp.run_config("dpo", 0).get("learning_rate")  # the trial's own
    assert first[0].label == "DPO trial 0"
    for _ in range(5):
        if not train_queued(exp):
            break
    trials = list(exp.runs.order_by("method", "trial"))
    assert [(r.method, r.trial) for r in trials] == [("dpo", 0), ("dpo", 1), ("dpo", 2), ("ppo", 0), ("ppo", 1), ("ppo", 2)]
    assert all(r.state == Run.State.SUCCEEDED for r in trials)
    assert len({r.config["learning_rate"] for r in trials if r.method == "ppo"}) == 3


def test_the_compare_page_states_best_of_budget_and_the_winners_verdict(client, alice):
    client.force_login(alice)
    exp = sweep_experiment(alice)
    while train_queued(exp):
        pass
    runs = loader.experiment_runs(exp)
    stats = loader.statistics(runs)
    sweep = stats["sweep"]
    assert [m["trials"] for m in sweep["methods"]] == [3, 3]
    assert sweep["validation_prompts"] == 5 and sweep["test_prompts"] == 5
    (pair,) = sweep["verdicts"]["rows"]
    assert "PPO" in pair["sentence"] and "DPO" in pair["sentence"]
    assert stats["verdicts"]["rows"] == []  # trials are not seeds: no pooled verdict over them
    page = client.get(reverse("compare:experiment", args=[exp.pk])).content.decode()
    assert 'id="sweep"' in page and "Equal tuning budget" in page and pair["sentence"] in page
    # Selection and reporting use disjoint prompts.
    validation, test = split(range(10))
    assert not validation & test and len(validation | test) == 10


def test_a_sweep_is_not_started_from_sft_and_its_settings_are_checked(alice):
    with pytest.raises(ConfigError):
        do_create_experiment(Experiment(owner=alice, name="x", methods=["sft", "dpo"], rl_from_sft=True,
                                        sweep={"trials": 2}))
    with pytest.raises(ConfigError):
        do_create_experiment(Experiment(owner=alice, name="x", methods=["dpo"], sweep={"trials": 2, "grid": 1}))


def test_the_form_starts_a_sweep(alice_client):
    from tests.webapp.conftest import form_data

    data = form_data(methods=["dpo", "ppo"], sweep_trials=4, sweep_sampler="random")
    data.pop("rl_from_sft", None)
    response = alice_client.post(reverse("experiments:new"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    exp = Experiment.objects.get()
    assert exp.sweep == {"trials": 4, "sampler": "random"}
    assert sorted((r.method, r.trial) for r in exp.runs.all()) == [("dpo", 0), ("ppo", 0)]
    data["rl_from_sft"] = "on"
    data["methods"] = ["sft", "dpo"]
    page = alice_client.post(reverse("experiments:new"), data).content.decode()
    assert "A sweep tunes every method from the base model" in page


def test_a_trial_below_the_median_of_earlier_trials_is_pruned(alice):
    from webapp.experiments.actions import PRUNED, recorded_trials, trial_should_prune
    from webapp.experiments.models import Sample
    from webapp.experiments.sweeps import from_settings

    exp = sweep_experiment(alice, trials=6, startup_trials=2)
    for _ in range(3):
        train_queued(exp)  # three finished trials per method
    run = exp.runs.filter(method="dpo", state=Run.State.QUEUED).get()
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, attempts=1)
    run.refresh_from_db()

    def evaluate(step: int, reward: float) -> None:
        Sample.objects.bulk_create([Sample(run=run, step=step, prompt_id=p, index=i, prompt=f"Question {p}",
                                           completion="x", reward=reward) for p in range(10) for i in range(2)])

    evaluate(0, 0.15)
    evaluate(10, 0.9)  # well above the earlier trials at step 10
    assert not trial_should_prune(run)
    Sample.objects.filter(run=run, step=10).update(reward=0.0)  # far below them
    assert trial_should_prune(run)
    # Ended by the sink (stopped, its log saying so), it counts as pruned and the sweep goes on.
    Run.objects.filter(pk=run.pk).update(log=f"{PRUNED} 10: below the median")
    run.refresh_from_db()
    assert do_finish_run(run, Run.State.CANCELLED)
    states = [t.state for t in recorded_trials(exp, "dpo", from_settings(exp.sweep))]
    assert states == ["complete", "complete", "complete", "pruned", "running"]


def test_the_workers_sink_stops_a_pruned_trial_at_its_evaluation(alice):
    from training.callbacks import Sample as Completion
    from webapp.experiments.actions import PRUNED
    from webapp.workers.sink import DatabaseSink

    exp = sweep_experiment(alice, trials=6, startup_trials=2)
    for _ in range(3):
        train_queued(exp)
    run = exp.runs.filter(method="ppo", state=Run.State.QUEUED).get()
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, attempts=1)
    run.refresh_from_db()
    sink = DatabaseSink(run)

    def completions(step, reward):
        return [Completion(step=step, prompt=f"Question {p}", completion="x", reward=reward, index=i, prompt_id=p)
                for p in range(10) for i in range(2)]

    sink.log_samples(0, completions(0, 0.15))
    assert not sink.stop  # step 0: the starting model, nothing to judge
    sink.log_samples(10, completions(10, 0.0))  # (Optuna's median pruner judges a trial's best value so far)
    assert sink.stop and sink.should_stop()
    run.refresh_from_db()
    assert f"{PRUNED} 10" in run.log


def test_the_reports_of_a_sweep_hold_its_table_and_leave_trials_out_of_the_pooled_verdicts(alice):
    from webapp.reports import formats
    from webapp.reports.report import build_report

    exp = sweep_experiment(alice)
    while train_queued(exp):
        pass
    doc = build_report(exp)
    assert doc["verdicts"]["pairs"] == [] and [m["trials"] for m in doc["sweep"]["methods"]] == [3, 3]
    assert sorted(r["trial"] for r in doc["runs"]) == [0, 0, 1, 1, 2, 2]
    md = formats.to_markdown(doc)
    assert "**Equal tuning budget**" in md and "(test half)" in md
    page = formats.to_html(doc)
    assert 'id="sweep"' in page and "Equal tuning budget" in page
    formats.to_json(doc)  # JSON-able, no NaN
