"""GRPO (TRL's GRPOTrainer) on the task's RL prompts, optimising ctx.reward_fn."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import trl
from datasets import Dataset

from training import options
from training.methods.common import MethodContext, TrainResult, train_trl, trl_args


def online_args(config_cls, ctx: MethodContext):
    """Arguments GRPO and RLOO share: group size, sampling, KL coefficient (and the training options:
    completion length, generation batch, clip, GRPO's loss and reward scaling)."""
    cfg = ctx.cfg
    return trl_args(config_cls, ctx, num_generations=cfg.num_generations, beta=cfg.beta,
                    temperature=cfg.temperature, top_k=0, top_p=1.0, log_completions=False,
                    **options.method_args(cfg))


def rl_rows(ctx: MethodContext) -> list[dict]:
    return options.filter_prompts(ctx.task.rl_rows(), ctx.tokenizer, ctx.cfg.max_prompt_length)


def build(ctx: MethodContext, config_cls=trl.GRPOConfig, trainer_cls=trl.GRPOTrainer):
    with shared_reference(trainer_cls, ctx.reference):
        return trainer_cls(model=ctx.model, reward_funcs=[ctx.reward_fn], args=online_args(config_cls, ctx),
                           train_dataset=Dataset.from_list(rl_rows(ctx)), processing_class=ctx.tokenizer)


def train(ctx: MethodContext, config_cls=trl.GRPOConfig, trainer_cls=trl.GRPOTrainer) -> TrainResult:
    return train_trl(build(ctx, config_cls, trainer_cls), ctx)


@contextmanager
def shared_reference(trainer_cls, reference):
    """With beta > 0 TRL's GRPO/RLOO load a reference of their own, from the policy's path (a second copy of the
    weights, and the wrong one when the run's reference is another model). They take no ref_model argument, so
    while the trainer is built its module's loader hands over the run's reference (the evaluation's) instead."""
    if reference is None:  # LoRA: TRL turns the adapters off, as the evaluation does
        yield
        return
    module = sys.modules[trainer_cls.__module__]
    original = module.create_model_from_path
    module.create_model_from_path = lambda *args, **kwargs: reference
    try:
        yield
    finally:
        module.create_model_from_path = original
