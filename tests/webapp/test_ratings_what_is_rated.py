"""What the arena rates: each finished run at its final evaluation plus the base model (or at a fraction of
training, or a named checkpoint), labelled by what it is; never two contestants that are the same model;
runs still training only when the owner says so; no item served twice to a rater before all were served."""

from __future__ import annotations

import random

import pytest

from webapp.experiments.models import Run, Sample
from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.contestants import pick_step
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.models import BASE, RatingSetup, Round, Vote

pytestmark = pytest.mark.django_db


@pytest.fixture
def chained(alice):
    """rl_from_sft: SFT from the base model, DPO and PPO from SFT's final model (their step 0 is SFT's)."""
    exp = make_demo_experiment(alice, name="chained", methods=("sft", "dpo", "ppo"), prompts=4, steps=(0, 10, 20))
    sft, dpo, ppo = exp.runs.order_by("id")
    Run.objects.filter(pk__in=[dpo.pk, ppo.pk]).update(depends_on=sft)
    return exp


def keys(exp) -> dict[str, str]:
    return {run.method: run.pk for run in exp.runs.all()}


def test_the_step_0_bug_never_pairs_a_model_with_itself(chained):
    """At "step 0" the SFT run is the base model and DPO and PPO are both still the SFT model."""
    RatingSetup.objects.create(experiment=chained, what=RatingSetup.What.FRACTION, fraction=0.0)
    arena = Arena(chained)
    pk = keys(chained)
    # SFT@0 is the base model; PPO@0 is DPO@0 (both SFT's final model): one contestant each.
    assert arena.contestants == sorted([BASE, f"{pk['dpo']}@0"])
    assert arena.same_as == {f"{pk['sft']}@0": BASE, f"{pk['ppo']}@0": f"{pk['dpo']}@0"}
    assert arena.pairs == [(f"{pk['dpo']}@0", BASE)]


def test_a_run_at_step_0_is_the_final_model_it_starts_from(chained):
    pk = keys(chained)
    RatingSetup.objects.create(experiment=chained, what=RatingSetup.What.CHECKPOINT,
                               checkpoints={str(pk["dpo"]): 0})
    arena = Arena(chained)
    assert f"{pk['dpo']}@0" not in arena.contestants and arena.same_as[f"{pk['dpo']}@0"] == f"{pk['sft']}@20"
    for first, second in arena.pairs:
        assert arena.identity(first, arena.sources[first]) != arena.identity(second, arena.sources[second])


def test_identical_outputs_or_identical_weights_are_one_contestant(alice, settings, tmp_path):
    exp = make_demo_experiment(alice, methods=("sft", "dpo", "grpo"), prompts=3, steps=(0, 10))
    sft, dpo, grpo = exp.runs.order_by("id")
    # DPO wrote exactly SFT's completions: the same model, whatever the runs say.
    for s in Sample.objects.filter(run=dpo, step=10):
        s.completion = Sample.objects.get(run=sft, step=10, prompt_id=s.prompt_id, index=s.index).completion
        s.save(update_fields=["completion"])
    # GRPO's final weights are byte-for-byte SFT's.
    for run in (sft, grpo):
        folder = tmp_path / f"run{run.pk}" / "model"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"same weights")
        Run.objects.filter(pk=run.pk).update(out_dir=str(folder.parent))
    arena = Arena(exp)
    assert arena.contestants == sorted([BASE, f"{sft.pk}@10"])
    assert arena.same_as == {f"{dpo.pk}@10": f"{sft.pk}@10", f"{grpo.pk}@10": f"{sft.pk}@10"}
    (tmp_path / f"run{grpo.pk}" / "model" / "model.safetensors").write_bytes(b"other weights")
    assert f"{grpo.pk}@10" in Arena(exp).contestants


def test_runs_still_training_are_rated_only_when_the_owner_says_so(alice):
    exp = make_demo_experiment(alice, methods=("sft", "dpo", "grpo"), prompts=3, steps=(0, 10, 20))
    sft, dpo, grpo = exp.runs.order_by("id")
    Run.objects.filter(pk=grpo.pk).update(state=Run.State.RUNNING, total=40)
    arena = Arena(exp)
    assert not any(k.startswith(f"{grpo.pk}@") for k in arena.contestants) and arena.waiting[0].pk == grpo.pk
    RatingSetup.objects.create(experiment=exp, include_running=True)
    arena = Arena(exp)
    assert f"{grpo.pk}@20" in arena.contestants
    assert arena.label(f"{grpo.pk}@20") == f"GRPO, at 50% of training (step 20 of 40) (#{grpo.pk})"


def test_labels_say_what_a_contestant_is(chained, alice):
    pk = keys(chained)
    arena = Arena(chained)
    assert arena.label(BASE) == "Base model"
    assert arena.label(f"{pk['sft']}@20") == f"SFT (#{pk['sft']})"
    assert arena.label(f"{pk['dpo']}@20") == f"DPO from SFT (#{pk['dpo']})"
    assert arena.label(f"{pk['dpo']}@10") == f"DPO from SFT, at 50% of training (step 10 of 20) (#{pk['dpo']})"
    later = Run.objects.create(experiment=chained, method="dpo", config={}, state=Run.State.SUCCEEDED,
                               depends_on_id=pk["ppo"], total=20)
    Sample.objects.create(run=later, step=20, prompt_id=0, prompt="p", completion="c", reward=0.0)
    Round.objects.create(experiment=chained, number=2).runs.add(later)
    assert Arena(chained).label(f"{later.pk}@20") == f"Round 2: DPO from PPO (#{later.pk})"


def test_pick_step():
    steps = {0, 10, 20, 30}
    assert pick_step(steps, "final", total=30) == 30
    assert pick_step(steps, "fraction", total=30, fraction=0.5) == 10  # 15: nearest, ties to the earlier
    assert pick_step(steps, "fraction", total=30, fraction=0.7) == 20
    assert pick_step(steps, "checkpoint", total=30, named=10) == 10
    assert pick_step(steps, "checkpoint", total=30, named=7) == 30
    assert pick_step(set(), "final", total=30) is None


def test_no_item_is_served_twice_before_every_item_was_served_once(alice):
    """A rater who skips (serves, does not vote) and votes meets every item once before any comes back;
    an item they voted on comes back only as a marked consistency repeat."""
    exp = make_demo_experiment(alice, methods=("sft", "dpo"), prompts=4, steps=(0, 10))
    RatingSetup.objects.create(experiment=exp, reveal=RatingSetup.Reveal.AT_END)
    arena = Arena(exp)
    total = arena.total_items
    assert total == 3 * 4
    rng = random.Random(3)
    shown: set = set()
    served = []
    for n in range(total):
        item = arena.next_item(alice, rng, shown=shown)
        assert item is not None
        key = (item.prompt_id, item.first, item.second)
        if item.repeat:
            continue
        assert key not in served, f"served twice after {n} items"
        served.append(key)
        if n % 3 == 0:
            shown.add(key)  # skipped
        else:
            do_cast_vote(exp, alice, item, "a")
    voted = set(Vote.objects.filter(rater=alice).values_list("prompt_id", "first", "second"))
    for _ in range(20):
        item = arena.next_item(alice, rng, shown=shown)
        if item is None:
            break
        assert item.repeat or (item.prompt_id, item.first, item.second) not in voted


def test_the_migration_gives_old_votes_keys_with_their_step(alice):
    import importlib

    migration = importlib.import_module(
        "webapp.ratings.migrations.0003_rate_chosen_evaluations_rounds_and_vote_datasets")
    exp = make_demo_experiment(alice, methods=("sft", "dpo"), prompts=2, steps=(0, 10))

    class Apps:
        @staticmethod
        def get_model(app, name):
            return Vote

    # "12" < "123" but "12@10" > "123@10": that vote's sides swap, its result stays the same.
    old = [Vote.objects.create(experiment=exp, rater=alice, step=10, prompt_id=0, first="12", second="123",
                               left_is_first=True, outcome="a", previous_result=Vote.SECOND),
           Vote.objects.create(experiment=exp, rater=alice, step=10, prompt_id=0, first="9", second="base",
                               left_is_first=False, outcome="a")]
    migration.keys_with_steps(Apps, None)
    swapped, kept = (Vote.objects.get(pk=v.pk) for v in old)
    assert (kept.first, kept.second, kept.step, kept.result) == ("9@10", "base", 0, Vote.SECOND)
    assert (swapped.first, swapped.second) == ("123@10", "12@10") and swapped.result == Vote.SECOND
    assert swapped.previous_result == Vote.FIRST  # "12" won before the swap, "123" lost: still so
