"""DPO on the task's preference pairs (TRL's DPOTrainer); the reference is the run's reference model."""

from __future__ import annotations

import trl
from datasets import Dataset

from training.methods import MAX_SEQUENCE_TOKENS
from training.methods.common import MethodContext, TrainResult, train_trl, trl_args


def train(ctx: MethodContext) -> TrainResult:
    cfg = ctx.cfg
    losses = {"loss_type": [cfg.loss_type]}
    if cfg.sft_weight:
        losses = {"loss_type": [cfg.loss_type, "sft"], "loss_weights": [1.0, cfg.sft_weight]}
    args = trl_args(trl.DPOConfig, ctx, beta=cfg.beta, max_length=MAX_SEQUENCE_TOKENS, **losses)
    trainer = trl.DPOTrainer(model=ctx.model, ref_model=ctx.reference, args=args,
                             train_dataset=Dataset.from_list(ctx.task.dpo_rows()), processing_class=ctx.tokenizer)
    return train_trl(trainer, ctx)
