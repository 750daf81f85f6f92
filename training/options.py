"""The training options of a config (training.config, "Training options") as TRL's arguments, and the
numbers the form shows about a config's batch (effective batch, micro-batch, tokens per step).

Pure functions of the config (and, for precision, of the device): tested without training anything.
`batch_size` is always the sequences per optimizer step (completions for GRPO/RLOO), whatever the
accumulation and the number of processes: a comparison stays fair when the hardware changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SFT_DPO_DEFAULT_LENGTH = 512  # TRL's max_length before these options existed (prompt + completion)


def micro_batch(cfg) -> int:
    """Sequences one process takes per forward/backward (TRL's per_device_train_batch_size)."""
    return cfg.batch_size // (cfg.gradient_accumulation_steps * cfg.num_processes)


def completion_length(cfg) -> int:
    """Longest completion during training: max_completion_length, else the evaluation's max_new_tokens."""
    return cfg.max_completion_length or cfg.max_new_tokens


def sequence_length(cfg) -> int | None:
    """SFT/DPO's max_length (prompt + completion), or None when the prompt is not bounded."""
    if cfg.max_prompt_length:
        return cfg.max_prompt_length + completion_length(cfg)
    return None


def use_bf16(cfg, device_type: str, bf16_supported: bool) -> bool:
    if cfg.precision == "fp32":
        return False
    if cfg.precision == "bf16":
        return True
    return device_type != "cpu" and bf16_supported  # auto


def weights_dtype(cfg, device):
    """The dtype the run's models are loaded in: float32 for fp32, bfloat16 for bf16, else the device's default
    (bf16 on GPUs that have it: training.models.train_dtype)."""
    import torch

    from training.models import train_dtype

    if cfg.precision == "fp32":
        return torch.float32
    if cfg.precision == "bf16":
        return torch.bfloat16
    return train_dtype(device)


def trainer_args(cfg, *, device_type: str = "cpu", bf16_supported: bool = False) -> dict[str, Any]:
    """transformers.TrainingArguments keys for the options every method has."""
    return {
        "per_device_train_batch_size": micro_batch(cfg),
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "lr_scheduler_type": ("constant_with_warmup" if cfg.lr_scheduler == "constant" and cfg.warmup_steps
                              else cfg.lr_scheduler),
        "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "bf16": use_bf16(cfg, device_type, bf16_supported),
        "fp16": False,
        "activation_checkpointing": cfg.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        "ddp_find_unused_parameters": False,  # every parameter trained gets a gradient (LoRA too)
    }


def method_args(cfg) -> dict[str, Any]:
    """The method's own TRL config keys (SFTConfig, DPOConfig, GRPOConfig, RLOOConfig)."""
    method = cfg.method
    if method == "sft":
        length = sequence_length(cfg)
        return {"max_length": length or SFT_DPO_DEFAULT_LENGTH, "packing": cfg.packing,
                "completion_only_loss": cfg.completion_only_loss}
    if method == "dpo":
        return {"max_length": sequence_length(cfg) or SFT_DPO_DEFAULT_LENGTH}
    if method in ("grpo", "rloo"):
        args = {"max_completion_length": completion_length(cfg),
                # TRL counts micro-steps: one generation feeds generation_steps whole optimizer steps
                "steps_per_generation": cfg.generation_steps * cfg.gradient_accumulation_steps,
                "epsilon_high": cfg.epsilon_high or None}
        if method == "grpo":
            args.update(loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards)
        return args
    return {}


def filter_prompts(rows: list[dict], tokenizer, max_prompt_length: int) -> list[dict]:
    """The RL rows whose chat-formatted prompt fits max_prompt_length tokens (all of them at 0). A cut prompt
    would be a different question: the long ones are left out rather than truncated."""
    if not max_prompt_length:
        return rows
    kept = [r for r in rows if prompt_tokens(tokenizer, r["prompt"]) <= max_prompt_length]
    if not kept:
        raise ValueError(f"no training prompt fits max_prompt_length={max_prompt_length} tokens")
    return kept


def prompt_tokens(tokenizer, prompt) -> int:
    if isinstance(prompt, str):
        return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class BatchSummary:
    """What one optimizer step holds, as the form shows it."""

    effective_batch: int  # sequences per optimizer step, all processes and micro-steps together
    micro_batch: int  # per process and forward pass
    tokens_per_step: int | None  # upper bound: effective batch x longest sequence (None: prompt unbounded)
    completion_tokens_per_step: int  # upper bound on the tokens generated or trained as completions
    generation_batch: int | None  # completions sampled at once (online methods)

    def text(self) -> str:
        parts = [f"Effective batch {self.effective_batch} sequences per step "
                 f"({self.micro_batch} per process x {self.effective_batch // self.micro_batch} micro-steps/processes)"]
        if self.tokens_per_step is not None:
            parts.append(f"at most {self.tokens_per_step:,} tokens per step")
        else:
            parts.append(f"at most {self.completion_tokens_per_step:,} completion tokens per step, plus prompts")
        if self.generation_batch:
            parts.append(f"{self.generation_batch} completions sampled at once")
        return "; ".join(parts) + "."


def batch_summary(cfg) -> BatchSummary:
    completion = completion_length(cfg)
    seq = cfg.max_prompt_length + completion if cfg.max_prompt_length else None
    generation = None
    if cfg.method in ("grpo", "rloo", "ppo"):
        generation = cfg.batch_size * cfg.generation_steps
    return BatchSummary(effective_batch=cfg.batch_size, micro_batch=micro_batch(cfg),
                        tokens_per_step=cfg.batch_size * seq if seq else None,
                        completion_tokens_per_step=cfg.batch_size * completion, generation_batch=generation)
