"""PPO trains the tiny model, logs its metrics, stops on request, and resumes exactly from a checkpoint."""

import copy
import json

import pytest
import torch

from training.callbacks import RunHooks
from training.config import PPOConfig
from training.methods import ppo
from training.methods.common import MethodContext
from training.models import add_lora, load_model, load_tokenizer
from training.tasks import get_task

CPU = torch.device("cpu")
KEYS = ["loss/policy", "loss/value", "loss/total", "policy/clipfrac", "policy/approxkl", "policy/entropy",
        "objective/kl", "objective/scores", "objective/non_score_reward", "val/mean", "completions/mean_length", "lr"]


class MemorySink:
    def __init__(self, stop_at: int | None = None):
        self.metrics: dict[int, dict[str, float]] = {}
        self.stop_at = stop_at
        self.last_step = 0

    def log_metrics(self, step, metrics):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_samples(self, step, samples):
        pass

    def progress(self, p):
        self.last_step = p.step

    def should_stop(self):
        return self.stop_at is not None and self.last_step >= self.stop_at

    def truncate_after(self, step):
        self.metrics = {s: m for s, m in self.metrics.items() if s <= step}


@pytest.fixture(scope="module")
def tiny(tiny_path):  # tiny_path (conftest) builds the tiny model once per session
    return {"base": load_model("tiny", CPU), "tok": load_tokenizer("tiny"), "ref": load_model("tiny", CPU)}


def length_reward(completions, **columns):
    """Dense and easy to move, unlike arithmetic's gold reward on an untrained model."""
    assert len(columns["answer"]) == len(columns["prompts"]) == len(completions)
    return [len(c) / 16 for c in completions]


def make_ctx(tiny, out_dir, *, lora=False, resume_from=None, stop_at=None, **overrides):
    settings = {"batch_size": 4, "num_minibatches": 2, "ppo_epochs": 2, "max_new_tokens": 8, "max_steps": 3,
                "learning_rate": 1e-3, "lora": lora, **overrides}
    cfg = PPOConfig(**settings)
    sink = MemorySink(stop_at)
    model = copy.deepcopy(tiny["base"])
    if lora:
        model = add_lora(model, r=4, alpha=8)
    hooks = RunHooks(sink, total=cfg.max_steps, eval_every=1000, evaluate=lambda step, model: None)
    ctx = MethodContext(cfg=cfg, task=get_task("arithmetic"), tokenizer=tiny["tok"], model=model,
                        reference=None if lora else tiny["ref"], device=CPU, out_dir=out_dir, hooks=hooks,
                        resume_from=resume_from, reward_fn=length_reward)
    return ctx, sink


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_ppo_trains_and_logs(tiny, tmp_path):
    ctx, sink = make_ctx(tiny, tmp_path)
    before = params(ctx.model)
    result = ppo.train(ctx)
    assert result.step == 3 and result.model is ctx.model
    changed = [k for k, v in params(ctx.model).items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)
    assert sorted(sink.metrics) == [1, 2, 3]
    for step in (1, 2, 3):
        assert {f"train/{k}" for k in KEYS} <= set(sink.metrics[step])
    assert sink.metrics[1]["train/objective/kl"] == 0.0  # policy == reference before the first update
    assert sink.metrics[3]["train/objective/kl"] != 0.0
    assert not (tmp_path / "checkpoints").exists()  # checkpoint_every=0


def test_stop_request_ends_after_that_step_with_a_checkpoint(tiny, tmp_path):
    ctx, sink = make_ctx(tiny, tmp_path, max_steps=10, checkpoint_every=5, stop_at=2)
    assert ppo.train(ctx).step == 2
    assert sorted(sink.metrics) == [1, 2]
    assert json.loads((tmp_path / "checkpoints/checkpoint-2/trainer_state.json").read_text())["global_step"] == 2


def test_resume_continues_exactly_where_the_checkpoint_left_off(tiny, tmp_path):
    first, _ = make_ctx(tiny, tmp_path / "a", max_steps=2, checkpoint_every=2)
    ppo.train(first)
    checkpoint = tmp_path / "a/checkpoints/checkpoint-2"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2

    resumed, sink = make_ctx(tiny, tmp_path / "a", max_steps=4, checkpoint_every=2, resume_from=str(checkpoint))
    assert ppo.train(resumed).step == 4
    assert sorted(sink.metrics) == [3, 4]
    assert sorted(p.name for p in (tmp_path / "a/checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]

    straight, straight_sink = make_ctx(tiny, tmp_path / "b", max_steps=4)
    ppo.train(straight)
    assert sink.metrics[4]["train/num_tokens"] == straight_sink.metrics[4]["train/num_tokens"] > 0
    expected = params(straight.model)
    assert all(torch.equal(v, expected[k]) for k, v in params(resumed.model).items())


def test_lora_uses_the_base_as_reference_and_checkpoints_adapters(tiny, tmp_path):
    ctx, sink = make_ctx(tiny, tmp_path, lora=True, max_steps=2, checkpoint_every=1)
    before = params(ctx.model)
    ppo.train(ctx)
    after = params(ctx.model)
    lora = [k for k in before if "lora_" in k]
    assert lora and all(k in lora for k, v in after.items() if not torch.equal(v, before[k]))
    assert any(not torch.equal(after[k], before[k]) for k in lora)
    assert sink.metrics[1]["train/objective/kl"] == 0.0  # adapters start as a no-op
    checkpoint = tmp_path / "checkpoints/checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()

    fresh, _ = make_ctx(tiny, tmp_path, lora=True)
    assert ppo.PPOTrainer(fresh).restore(checkpoint) == 2
    assert all(torch.equal(v, after[k]) for k, v in params(fresh.model).items())
