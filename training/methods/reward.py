"""Reward-model training (TRL's RewardTrainer) on the task's preference pairs, and loading a trained
reward model as a TRL-style reward function for PPO, GRPO and RLOO."""

from __future__ import annotations

import torch
import trl
from datasets import Dataset

from training.methods.common import MethodContext, TrainResult, train_trl, trl_args
from training.tasks.base import assistant, text_of, user


def train(ctx: MethodContext) -> TrainResult:
    args = trl_args(trl.RewardConfig, ctx, max_length=512)
    trainer = trl.RewardTrainer(model=ctx.model, args=args, train_dataset=Dataset.from_list(ctx.task.dpo_rows()),
                                processing_class=ctx.tokenizer)
    return train_trl(trainer, ctx)


@torch.no_grad()
def score(model, tokenizer, prompts: list, completions: list, device, batch_size: int = 32) -> list[float]:
    """Reward-model scores of (prompt, completion) conversations."""
    texts = [tokenizer.apply_chat_template((p if isinstance(p, list) else user(p)) + assistant(text_of(c)),
                                           tokenize=False) for p, c in zip(prompts, completions, strict=True)]
    out: list[float] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
        out.extend(logits[:, 0].float().cpu().tolist())
    return out


def pairwise_accuracy(model, tokenizer, examples, device) -> dict[str, float]:
    """Held-out preference accuracy: how often the reference completion outscores the rejected one."""
    pairs = [ex for ex in examples if ex.rejected]
    prompts = [ex.prompt for ex in pairs]
    chosen = score(model, tokenizer, prompts, [ex.reference for ex in pairs], device)
    rejected = score(model, tokenizer, prompts, [ex.rejected for ex in pairs], device)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {"eval/accuracy": sum(m > 0 for m in margins) / len(margins), "eval/margin": sum(margins) / len(margins)}


def load_reward_fn(path: str, device):
    """A trained reward model as a reward function `(completions, prompts, **columns) -> list[float]`."""
    from transformers import AutoModelForSequenceClassification

    from training.models import load_model, load_tokenizer

    model = load_model(path, device, cls=AutoModelForSequenceClassification, num_labels=1).eval()
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"

    def reward_model(completions, prompts, **_):
        return score(model, tokenizer, prompts, completions, device)

    return reward_model
