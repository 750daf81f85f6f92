"""The training options in real (tiny) training: generation batches serve several optimizer steps and each
rollout once; GRPO/RLOO use the run's reference instead of loading another; PPO honours the options."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.training.test_ppo_train import MemorySink, length_reward, params
from training.callbacks import RunHooks
from training.config import from_dict
from training.methods import grpo, ppo
from training.methods.common import MethodContext
from training.models import load_model, load_tokenizer
from training.tasks import get_task

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tiny_path):
    return {"base": load_model("tiny", CPU), "tok": load_tokenizer("tiny"), "ref": load_model("tiny", CPU)}


def make_ctx(tiny, out_dir, method, **settings):
    cfg = from_dict({"method": method, "max_new_tokens": 8, "learning_rate": 1e-3, **settings})
    sink = MemorySink()
    hooks = RunHooks(sink, total=cfg.max_steps, eval_every=1000, evaluate=lambda step, model: None)
    ctx = MethodContext(cfg=cfg, task=get_task("arithmetic"), tokenizer=tiny["tok"], model=copy.deepcopy(tiny["base"]),
                        reference=tiny["ref"], device=CPU, out_dir=out_dir, hooks=hooks, reward_fn=length_reward)
    return ctx, sink


def test_grpo_generation_batch_of_4_steps_same_updates_each_rollout_once(tiny, tmp_path):
    """generation_steps=4: one generation per 4 optimizer steps, 8 optimizer steps in all, and the completions
    the loss sees over a generation's 4 steps are exactly the ones generated, each once."""
    ctx, sink = make_ctx(tiny, tmp_path, "grpo", batch_size=8, num_generations=4, generation_steps=4, max_steps=8,
                         beta=0.0)
    trainer = grpo.build(ctx)
    generated, used = [], []
    generate = trainer._generate_and_score_completions

    def recording_generate(inputs):
        out = generate(inputs)
        generated.append(sorted(map(tuple, out["completion_ids"].tolist())))
        return out

    compute_loss = trainer.compute_loss

    def recording_loss(model, inputs, *args, **kwargs):
        used.append(list(map(tuple, inputs["completion_ids"].tolist())))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer._generate_and_score_completions = recording_generate
    trainer.compute_loss = recording_loss
    result = grpo.train_trl(trainer, ctx)
    optimizer_steps = sorted(sink.metrics)
    assert result.step == 8 and optimizer_steps == list(range(1, 9))
    assert len(generated) == 2 and all(len(g) == 32 for g in generated)  # 2 generations of 4 steps x 8
    assert len(used) == 8 and all(len(u) == 8 for u in used)  # one batch of 8 per optimizer step
    for k, batch in enumerate(generated):  # each generation's rollouts, used once each, by its own 4 steps
        assert sorted(c for u in used[4 * k:4 * k + 4] for c in u) == batch


def test_grpo_uses_the_runs_reference_model(tiny, tmp_path):
    """With beta > 0 TRL would load a second reference from the policy's path; it gets the run's instead."""
    ctx, _ = make_ctx(tiny, tmp_path, "grpo", batch_size=4, num_generations=4, max_steps=1, beta=0.04)
    assert grpo.build(ctx).ref_model is ctx.reference
    import trl

    ctx, _ = make_ctx(tiny, tmp_path, "rloo", batch_size=4, num_generations=4, max_steps=1, beta=0.05)
    assert grpo.build(ctx, trl.RLOOConfig, trl.RLOOTrainer).ref_model is ctx.reference


def test_grpo_trains_with_the_options(tiny, tmp_path):
    ctx, sink = make_ctx(tiny, tmp_path, "grpo", batch_size=8, num_generations=4, max_steps=2,
                         gradient_accumulation_steps=2, loss_type="dr_grpo", scale_rewards="none", epsilon_high=0.28,
                         lr_scheduler="linear", warmup_steps=1, weight_decay=0.01, max_completion_length=6)
    before = params(ctx.model)
    assert grpo.train(ctx).step == 2
    assert params(ctx.model).keys() == before.keys()
    assert sink.metrics[2]["train/completions/max_length"] <= 6


def test_ppo_generation_batch_samples_once_for_several_steps(tiny, tmp_path):
    ctx, sink = make_ctx(tiny, tmp_path, "ppo", batch_size=4, num_minibatches=2, ppo_epochs=1, max_steps=5,
                         generation_steps=2)
    trainer = ppo.PPOTrainer(ctx)
    calls = []
    rollout = trainer.rollout

    def counting(indices):
        calls.append(list(indices))
        return rollout(indices)

    trainer.rollout = counting
    for step in range(1, 6):
        stats = trainer.step(step)
        assert "loss/policy" in stats
    # steps 1-2, 3-4 and 5 (the run ends): the prompts of each step, in order, sampled together
    assert [len(c) for c in calls] == [8, 8, 4]
    expected = [i for s in range(1, 6) for i in ppo.batch_indices(len(trainer.rows), 4, s, ctx.cfg.seed)]
    assert [i for c in calls for i in c] == expected


def test_ppo_honours_the_training_options(tiny, tmp_path):
    ctx, _ = make_ctx(tiny, tmp_path, "ppo", batch_size=8, num_minibatches=2, ppo_epochs=1, max_steps=4,
                      gradient_accumulation_steps=2, lr_scheduler="linear", warmup_steps=2, weight_decay=0.1,
                      max_grad_norm=0.0, gradient_checkpointing=True)
    trainer = ppo.PPOTrainer(ctx)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.1
    lrs = [trainer.step(s)["lr"] for s in range(1, 5)]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)  # warmup, then linear
    assert lrs[3] == pytest.approx(5e-4)
    assert not trainer.policy.training  # back in eval mode after the checkpointed updates


def test_ppo_accumulation_gives_the_same_update(tiny, tmp_path):
    """Two micro-batches of 2 accumulate to the gradient of one minibatch of 4 (mean losses per micro-batch of
    equal token counts aside, the update is close)."""
    results = []
    for accum in (1, 2):
        torch.manual_seed(0)
        ctx, _ = make_ctx(tiny, tmp_path / str(accum), "ppo", batch_size=4, num_minibatches=1, ppo_epochs=1,
                          max_steps=1, gradient_accumulation_steps=accum, max_grad_norm=0.0)
        trainer = ppo.PPOTrainer(ctx)
        trainer.step(1)
        results.append(params(ctx.model))
    base = params(tiny["base"])
    moved = [k for k in base if not torch.equal(results[0][k], base[k])]
    assert moved and all(torch.allclose(results[0][k], results[1][k], atol=5e-3) for k in moved)
