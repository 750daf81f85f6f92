"""Each method trains a few steps on `tiny` through the real runner, as the CLI and the worker do."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import FAST, MemorySink
from training.config import from_dict
from training.runner import run

EVAL_KEYS = {"eval/reward", "eval/reward_std", "eval/kl", "eval/kl_stderr", "eval/length", "eval/entropy"}
TRL_KEYS = {
    "sft": {"train/loss", "train/mean_token_accuracy"},
    "dpo": {"train/loss", "train/rewards/margins", "train/rewards/accuracies"},
    "grpo": {"train/loss", "train/reward", "train/kl"},
    "rloo": {"train/loss", "train/reward", "train/kl"},
    "ppo": {"train/loss/policy", "train/loss/value", "train/policy/clipfrac", "train/objective/kl", "train/num_tokens"},
}


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k in after)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_path):
    """One short run per method, shared by the assertions below."""
    out = {}
    for method in TRL_KEYS:
        # groups of 4 completions: enough spread in reward for a nonzero advantage on the untrained model
        extra = {"num_generations": 4, "batch_size": 8, "max_new_tokens": 16} if method in ("grpo", "rloo") else {}
        cfg = from_dict({"method": method, **FAST, **extra})
        sink = MemorySink()
        folder = tmp_path_factory.mktemp(method)
        result = run(cfg, sink, folder)
        out[method] = (result, sink, folder)
    return out


@pytest.mark.parametrize("method", list(TRL_KEYS))
def test_method_trains_and_logs_uniform_eval(runs, tiny_path, method):
    result, sink, folder = runs[method]
    assert result.step == FAST["max_steps"] and not result.stopped
    assert changed(weights(tiny_path), weights(folder / "model"))
    assert TRL_KEYS[method] <= sink.keys()
    assert EVAL_KEYS <= sink.keys()
    eval_steps = [s for s, _ in sink.series("eval/reward")]
    assert eval_steps == [0, 2, 3]  # step 0, every eval_every steps, and the end
    assert sink.series("eval/kl")[0] == (0, 0.0)  # policy == reference at step 0: exactly zero
    assert sink.series("eval/kl")[-1][1] != 0.0
    assert len(sink.samples) == 3 * FAST["eval_prompts"] * FAST["eval_samples"]
    assert json.loads((folder / "config.json").read_text())["method"] == method


def test_dpo_first_loss_is_ln2(runs):
    _, sink, _ = runs["dpo"]
    first_loss = sink.series("train/loss")[0][1]
    assert first_loss == pytest.approx(math.log(2), abs=1e-3)


def test_samples_line_up_by_prompt_across_methods(runs):
    prompts = {m: [s.prompt for s in sink.samples if s.step == 0] for m, (_, sink, _) in runs.items()}
    assert len({tuple(p) for p in prompts.values()}) == 1


def test_stop_request_ends_at_that_step_with_its_model_and_no_final_eval(tmp_path):
    cfg = from_dict({"method": "sft", **FAST, "max_steps": 50, "eval_every": 100})
    sink = MemorySink(stop_at=2)
    result = run(cfg, sink, tmp_path)
    assert result.stopped and result.step == 2
    # No final evaluation (on a CPU it outlasts the cancel grace period): the curve ends where it was.
    assert [s for s, _ in sink.series("eval/reward")] == [0]
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_resume_continues_from_checkpoint_without_duplicates(tmp_path):
    base = {"method": "sft", **FAST, "eval_every": 2, "checkpoint_every": 2}
    sink = MemorySink()
    run(from_dict({**base, "max_steps": 2}), sink, tmp_path)
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    # the worker died after step 2 had been logged; a new process resumes with the full budget
    result = run(from_dict({**base, "max_steps": 4}), sink, tmp_path)
    assert sink.truncated_at == 2
    assert result.step == 4
    loss_steps = [s for s, _ in sink.series("train/loss")]
    assert loss_steps == [1, 2, 3, 4]
    assert [s for s, _ in sink.series("eval/reward")] == [0, 2, 4]


def test_reward_model_trains_and_reports_pairwise_accuracy(tmp_path, tiny_path):
    sink = MemorySink()
    result = run(from_dict({"method": "reward", **FAST}), sink, tmp_path)
    assert result.step == 3
    assert {"eval/accuracy", "eval/margin", "train/loss"} <= sink.keys()
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_classic_pipeline_reward_model_then_ppo_logs_proxy_and_gold(tmp_path):
    run(from_dict({"method": "reward", **FAST}), MemorySink(), tmp_path / "rm")
    sink = MemorySink()
    cfg = from_dict({"method": "ppo", **FAST, "reward_model": str(tmp_path / "rm" / "model")})
    run(cfg, sink, tmp_path / "ppo")
    assert [s for s, _ in sink.series("eval/proxy_reward")] == [0, 2, 3]
    assert [s for s, _ in sink.series("eval/reward")] == [0, 2, 3]  # gold, measured alongside
    assert "train/objective/scores" in sink.keys()  # PPO optimised the reward model's scores


def test_a_half_written_checkpoint_is_not_resumed_from(tmp_path):
    from training.runner import last_checkpoint

    for step, complete in ((2, True), (4, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_resuming_a_run_whose_last_checkpoint_is_its_last_step_trains_no_extra_step(tmp_path):
    cfg = from_dict({"method": "sft", **FAST, "max_steps": 2, "eval_every": 2, "checkpoint_every": 2})
    sink = MemorySink()
    first = run(cfg, sink, tmp_path)
    before = weights(first.model_dir)
    again = run(cfg, sink, tmp_path)  # the worker died after checkpoint-2, before the run was marked done
    assert again.step == 2
    assert [s for s, _ in sink.series("train/loss")] == [1, 2]
    assert [s for s, _ in sink.series("eval/reward")] == [0, 2]  # the final evaluation is not logged twice
    assert not changed(before, weights(again.model_dir))


@pytest.mark.parametrize("method", ["sft", "grpo"])
def test_the_same_config_and_seed_give_the_same_run(tmp_path, method):
    """Comparisons rest on it: a method's curve moves because of the method, not the draw. (On one machine:
    another CPU may round differently.)"""

    def once(folder):
        sink = MemorySink()
        run(from_dict({"method": method, **FAST, "seed": 3}), sink, folder)
        timing = ("runtime", "per_second", "time")  # wall-clock figures (train/step_time, ...)
        return ([(s, {k: v for k, v in m.items() if not any(t in k for t in timing)}) for s, m in sink.metrics],
                [(s.step, s.prompt, s.completion, s.reward) for s in sink.samples])

    first, second = once(tmp_path / "a"), once(tmp_path / "b")
    assert first == second
    assert first[0] and first[1]  # something was compared
    other = MemorySink()
    run(from_dict({"method": method, **FAST, "seed": 4}), other, tmp_path / "c")
    assert [c for *_, c, _ in first[1]] != [s.completion for s in other.samples]  # the seed does matter
