"""GRPO (TRL's GRPOTrainer) on the task's RL prompts, optimising ctx.reward_fn."""

from __future__ import annotations

import trl
from datasets import Dataset

from training.methods.common import MethodContext, TrainResult, train_trl, trl_args


def online_args(config_cls, ctx: MethodContext):
    """Arguments GRPO and RLOO share: group size, sampling, KL coefficient."""
    cfg = ctx.cfg
    return trl_args(config_cls, ctx, num_generations=cfg.num_generations, beta=cfg.beta,
                    max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_k=0, top_p=1.0,
                    log_completions=False)


def train(ctx: MethodContext, config_cls=trl.GRPOConfig, trainer_cls=trl.GRPOTrainer) -> TrainResult:
    trainer = trainer_cls(model=ctx.model, reward_funcs=[ctx.reward_fn], args=online_args(config_cls, ctx),
                          train_dataset=Dataset.from_list(ctx.task.rl_rows()), processing_class=ctx.tokenizer)
    return train_trl(trainer, ctx)
