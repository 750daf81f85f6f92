"""The training options: each one's validation, and its mapping to TRL's arguments (checked by building
TRL's own config classes with them, so a name TRL does not know fails here, not in a run)."""

from __future__ import annotations

import pytest
import trl

from training import options
from training.config import DPO_LOSSES, GRPO_LOSSES, ConfigError, from_dict


def cfg(method="sft", **kw):
    return from_dict({"method": method, **kw})


def refused(key, method="sft", **kw):
    with pytest.raises(ConfigError) as e:
        cfg(method, **kw)
    assert e.value.key == key, e.value
    return e.value.message


# --- validation --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "bad"), [
    ("gradient_accumulation_steps", 0), ("gradient_accumulation_steps", 2000), ("gradient_accumulation_steps", 1.5),
    ("lr_scheduler", "exponential"), ("warmup_steps", -1), ("weight_decay", -0.1), ("weight_decay", "0.1"),
    ("max_grad_norm", -1.0), ("precision", "fp16"), ("gradient_checkpointing", "yes"),
    ("max_prompt_length", -1), ("max_completion_length", 200_000), ("num_processes", 0), ("num_processes", 65),
])
def test_each_option_is_checked_like_every_field(key, bad):
    refused(key, **{key: bad})


def test_accumulation_must_divide_the_batch():
    assert "must divide batch_size (8)" in refused("gradient_accumulation_steps", batch_size=8,
                                                   gradient_accumulation_steps=3)
    assert cfg(batch_size=8, gradient_accumulation_steps=4).gradient_accumulation_steps == 4


def test_processes_must_divide_the_micro_steps_batch():
    assert "(4)" in refused("num_processes", batch_size=8, gradient_accumulation_steps=2, num_processes=3)
    assert cfg(batch_size=8, gradient_accumulation_steps=2, num_processes=2).num_processes == 2


def test_warmup_shorter_than_the_run():
    refused("warmup_steps", max_steps=10, warmup_steps=10)
    assert cfg(max_steps=10, warmup_steps=9).warmup_steps == 9


def test_bf16_refused_on_the_cpu():
    refused("precision", precision="bf16", device="cpu")
    assert cfg(precision="bf16", device="cuda").precision == "bf16"


def test_packing_needs_both_lengths():
    refused("packing", packing=True)
    refused("packing", packing=True, max_prompt_length=64)
    assert cfg(packing=True, max_prompt_length=64, max_completion_length=64).packing


def test_method_options_exist_only_where_the_method_has_them():
    refused("packing", "dpo", packing=True)
    refused("loss_type", "rloo", loss_type="dapo")  # RLOO has no loss variants in TRL 1.16
    refused("scale_rewards", "ppo", scale_rewards="none")
    refused("epsilon_high", "sft", epsilon_high=0.28)
    refused("generation_steps", "dpo", generation_steps=2)


@pytest.mark.parametrize(("method", "key", "bad"), [
    ("grpo", "loss_type", "luspo"), ("grpo", "scale_rewards", True), ("grpo", "epsilon_high", -0.1),
    ("grpo", "generation_steps", 0), ("rloo", "generation_steps", 2000), ("ppo", "generation_steps", 0),
    ("dpo", "loss_type", "kto"),
])
def test_method_options_are_checked(method, key, bad):
    refused(key, method, **{key: bad})


def test_ppo_accumulation_splits_each_minibatch():
    assert "minibatch" in refused("gradient_accumulation_steps", "ppo", batch_size=8, num_minibatches=4,
                                  gradient_accumulation_steps=4)
    assert cfg("ppo", batch_size=8, num_minibatches=2, gradient_accumulation_steps=4).gradient_accumulation_steps == 4


def test_the_options_are_advanced_fields_with_help():
    specs = {s["name"]: s for s in cfg("grpo").field_specs()}
    for name in ("gradient_accumulation_steps", "lr_scheduler", "warmup_steps", "weight_decay", "max_grad_norm",
                 "precision", "gradient_checkpointing", "max_prompt_length", "max_completion_length",
                 "num_processes", "loss_type", "scale_rewards", "epsilon_high", "generation_steps"):
        assert specs[name]["advanced"] and specs[name]["help"], name


# --- the mapping to TRL -------------------------------------------------------------------------------

def build(trl_cls, c, **extra):
    """TRL's config built as training.methods.common.trl_args builds it (CPU flags, output dir)."""
    return trl_cls(output_dir="/tmp/unused", use_cpu=True, report_to="none", max_steps=c.max_steps,
                   **options.trainer_args(c), **options.method_args(c), **extra)


def test_defaults_map_to_what_the_adapters_passed_before():
    args = options.trainer_args(cfg(batch_size=8))
    assert args == {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "lr_scheduler_type": "constant",
                    "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 1.0, "bf16": False, "fp16": False,
                    "activation_checkpointing": False, "ddp_find_unused_parameters": False}
    assert options.method_args(cfg()) == {"max_length": 512, "packing": False, "completion_only_loss": True}
    assert options.method_args(cfg("dpo")) == {"max_length": 512}
    grpo = options.method_args(cfg("grpo", max_new_tokens=16))
    assert grpo == {"max_completion_length": 16, "steps_per_generation": 1, "epsilon_high": None,
                    "loss_type": "dapo", "scale_rewards": "group"}


def test_every_common_option_reaches_trl():
    c = cfg(batch_size=16, gradient_accumulation_steps=2, num_processes=2, lr_scheduler="cosine", warmup_steps=5,
            weight_decay=0.01, max_grad_norm=0.5, gradient_checkpointing=True, max_prompt_length=100,
            max_completion_length=28, packing=True, completion_only_loss=False)
    a = build(trl.SFTConfig, c)
    assert a.per_device_train_batch_size == 4  # 16 per step = 4 x 2 micro-steps x 2 processes
    assert a.gradient_accumulation_steps == 2
    assert a.lr_scheduler_type == "cosine" and a.warmup_steps == 5
    assert a.weight_decay == 0.01 and a.max_grad_norm == 0.5 and a.gradient_checkpointing
    assert a.max_length == 128 and a.packing and a.completion_only_loss is False


def test_constant_with_warmup():
    assert options.trainer_args(cfg(warmup_steps=3))["lr_scheduler_type"] == "constant_with_warmup"
    assert options.trainer_args(cfg(lr_scheduler="linear"))["lr_scheduler_type"] == "linear"


@pytest.mark.parametrize(("precision", "device", "bf16_ok", "expected"), [
    ("auto", "cpu", False, False), ("auto", "cuda", True, True), ("auto", "cuda", False, False),
    ("fp32", "cuda", True, False), ("bf16", "cuda", True, True),
])
def test_precision(precision, device, bf16_ok, expected):
    c = cfg(precision=precision, device="auto")
    assert options.trainer_args(c, device_type=device, bf16_supported=bf16_ok)["bf16"] is expected


def test_lengths_for_training_apart_from_the_evaluation():
    c = cfg("dpo", max_new_tokens=16, max_prompt_length=64, max_completion_length=48)
    assert build(trl.DPOConfig, c).max_length == 112
    assert options.method_args(cfg("dpo", max_new_tokens=16, max_prompt_length=64))["max_length"] == 80
    g = cfg("grpo", max_new_tokens=16, max_completion_length=48)
    assert build(trl.GRPOConfig, g, num_generations=4).max_completion_length == 48
    assert options.completion_length(cfg("ppo", max_new_tokens=16)) == 16


@pytest.mark.parametrize("loss", DPO_LOSSES)
def test_every_dpo_loss_is_one_trl_knows(loss):
    c = cfg("dpo", loss_type=loss)
    assert build(trl.DPOConfig, c, loss_type=[c.loss_type]).loss_type == [loss]


@pytest.mark.parametrize("loss", GRPO_LOSSES)
def test_every_grpo_loss_is_one_trl_knows(loss):
    c = cfg("grpo", loss_type=loss, scale_rewards="batch", epsilon_high=0.28)
    a = build(trl.GRPOConfig, c, num_generations=4)
    assert (a.loss_type, a.scale_rewards, a.epsilon_high) == (loss, "batch", 0.28)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_reward_scaling(scale):
    assert build(trl.GRPOConfig, cfg("grpo", scale_rewards=scale), num_generations=4).scale_rewards == scale


def test_generation_batch_counts_optimizer_steps():
    """generation_steps counts optimizer steps; TRL's steps_per_generation counts micro-steps."""
    c = cfg("grpo", batch_size=8, num_generations=4, gradient_accumulation_steps=2, generation_steps=4)
    a = build(trl.GRPOConfig, c, num_generations=4)
    assert a.per_device_train_batch_size == 4 and a.steps_per_generation == 8
    assert a.generation_batch_size == 32  # 4 optimizer steps x 8 completions
    r = build(trl.RLOOConfig, cfg("rloo", batch_size=8, generation_steps=3), num_generations=4)
    assert r.generation_batch_size == 24


def test_batch_summary():
    s = options.batch_summary(cfg("grpo", batch_size=32, num_generations=4, gradient_accumulation_steps=4,
                                  num_processes=2, max_new_tokens=16, max_prompt_length=100,
                                  max_completion_length=28, generation_steps=2))
    assert (s.effective_batch, s.micro_batch, s.tokens_per_step, s.generation_batch) == (32, 4, 32 * 128, 64)
    assert "Effective batch 32" in s.text() and "4,096 tokens per step" in s.text()
    s = options.batch_summary(cfg(batch_size=8, max_new_tokens=16))
    assert s.tokens_per_step is None and s.completion_tokens_per_step == 128 and s.generation_batch is None
    assert "128 completion tokens per step, plus prompts" in s.text()


def test_long_prompts_are_left_out_of_rl_training(tiny_path):
    from training.models import load_tokenizer

    tok = load_tokenizer(str(tiny_path))
    rows = [{"prompt": [{"role": "user", "content": "1+1"}]}, {"prompt": [{"role": "user", "content": "1+1 " * 50}]}]
    short = options.prompt_tokens(tok, rows[0]["prompt"])
    assert options.filter_prompts(rows, tok, 0) == rows
    assert options.filter_prompts(rows, tok, short) == rows[:1]
    with pytest.raises(ValueError):
        options.filter_prompts(rows, tok, short - 1)


def test_precision_is_the_weights_dtype_too():
    import torch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert options.weights_dtype(cfg(), cpu) == torch.float32
    assert options.weights_dtype(cfg(precision="fp32", device="cuda"), gpu) == torch.float32
    assert options.weights_dtype(cfg(precision="bf16", device="cuda"), gpu) == torch.bfloat16
