"""SFT on the task's demonstrations (TRL's SFTTrainer, loss on completion tokens only)."""

from __future__ import annotations

import trl
from datasets import Dataset

from training.methods import MAX_SEQUENCE_TOKENS
from training.methods.common import MethodContext, TrainResult, train_trl, trl_args


def train(ctx: MethodContext) -> TrainResult:
    args = trl_args(trl.SFTConfig, ctx, max_length=MAX_SEQUENCE_TOKENS, completion_only_loss=True, packing=False)
    trainer = trl.SFTTrainer(model=ctx.model, args=args, train_dataset=Dataset.from_list(ctx.task.sft_rows()),
                             processing_class=ctx.tokenizer)
    return train_trl(trainer, ctx)
