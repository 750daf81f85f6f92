"""Reward-model training (TRL's RewardTrainer) on the task's preference pairs, each pair's loss counted by its
weight when the dataset has one, and its held-out pairwise accuracy. A trained reward model rewards PPO, GRPO and
RLOO as the `reward_model` signal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import trl
from datasets import Dataset

from training.methods import MAX_SEQUENCE_TOKENS
from training.methods.common import MethodContext, TrainResult, train_trl, trl_args
from training.rewards.models import score_pairs as score


@dataclass
class WithWeights:
    """TRL's preference collator, plus the batch's `weight` tensor when the rows have one."""

    collate: Any

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collate(examples)
        if "weight" in examples[0]:
            batch["weight"] = torch.tensor([float(e["weight"]) for e in examples])
        return batch


def weighted_loss(logits: torch.Tensor, weight: torch.Tensor, margin: torch.Tensor | None = None,
                  center: float | None = None) -> torch.Tensor:
    """TRL's pairwise loss (-log sigmoid(r_chosen - r_rejected - margin), plus the optional centring term), each
    pair's term multiplied by its weight and normalised by the batch's weight sum: a plain mean when all are 1."""
    chosen, rejected = torch.chunk(logits.squeeze(-1).float(), chunks=2)
    per_pair = -F.logsigmoid(chosen - rejected - (margin if margin is not None else 0.0))
    weight = weight.to(per_pair)
    total = weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)
    loss = (weight * per_pair).sum() / total
    if center is not None:
        loss = loss + center * (weight * (chosen + rejected) ** 2).sum() / total
    return loss


class WeightedRewardTrainer(trl.RewardTrainer):
    """TRL's RewardTrainer that keeps a `weight` column and weights each pair's loss by it (TRL's metrics stay
    unweighted). Rows without one train exactly as with TRL's trainer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = WithWeights(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "weight" not in self._signature_columns:  # else the Trainer drops the column before collating
            self._signature_columns = [*self._signature_columns, "weight"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weight = inputs.pop("weight", None)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
        if weight is not None:  # the same rewards, weighted: no second forward pass
            loss = weighted_loss(outputs.logits, weight, inputs.get("margin"), self.args.center_rewards_coefficient)
        return (loss, outputs) if return_outputs else loss


def train(ctx: MethodContext) -> TrainResult:
    return train_trl(build(ctx), ctx)


def build(ctx: MethodContext) -> WeightedRewardTrainer:
    args = trl_args(trl.RewardConfig, ctx, max_length=MAX_SEQUENCE_TOKENS)
    return WeightedRewardTrainer(model=ctx.model, args=args, train_dataset=Dataset.from_list(ctx.task.dpo_rows()),
                                 processing_class=ctx.tokenizer)


def pairwise_accuracy(model, tokenizer, examples, device) -> dict[str, float]:
    """Held-out preference accuracy: how often the reference completion outscores the rejected one (each pair
    counted by its weight: a pair two raters of three preferred counts twice the opposite one)."""
    pairs = [ex for ex in examples if ex.rejected]
    prompts = [ex.chat() for ex in pairs]
    chosen = score(model, tokenizer, prompts, [ex.reference for ex in pairs], device)
    rejected = score(model, tokenizer, prompts, [ex.rejected for ex in pairs], device)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    weights = [ex.weight for ex in pairs]
    total = sum(weights)
    return {"eval/accuracy": sum(w for w, m in zip(weights, margins, strict=True) if m > 0) / total,
            "eval/margin": sum(w * m for w, m in zip(weights, margins, strict=True)) / total}
