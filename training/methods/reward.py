"""Reward-model training (TRL's RewardTrainer) on the task's preference pairs, and its held-out pairwise
accuracy. A trained reward model rewards PPO, GRPO and RLOO as the `reward_model` signal."""

from __future__ import annotations

import trl
from datasets import Dataset

from training.methods import MAX_SEQUENCE_TOKENS
from training.methods.common import MethodContext, TrainResult, train_trl, trl_args
from training.rewards.models import score_pairs as score


def train(ctx: MethodContext) -> TrainResult:
    args = trl_args(trl.RewardConfig, ctx, max_length=MAX_SEQUENCE_TOKENS)
    trainer = trl.RewardTrainer(model=ctx.model, args=args, train_dataset=Dataset.from_list(ctx.task.dpo_rows()),
                                processing_class=ctx.tokenizer)
    return train_trl(trainer, ctx)


def pairwise_accuracy(model, tokenizer, examples, device) -> dict[str, float]:
    """Held-out preference accuracy: how often the reference completion outscores the rejected one."""
    pairs = [ex for ex in examples if ex.rejected]
    prompts = [ex.chat() for ex in pairs]
    chosen = score(model, tokenizer, prompts, [ex.reference for ex in pairs], device)
    rejected = score(model, tokenizer, prompts, [ex.rejected for ex in pairs], device)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {"eval/accuracy": sum(m > 0 for m in margins) / len(margins), "eval/margin": sum(margins) / len(margins)}
