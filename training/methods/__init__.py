"""Method adapters: each module has `train(ctx: MethodContext) -> TrainResult`."""

from __future__ import annotations

import importlib

from training.options import SFT_DPO_DEFAULT_LENGTH

DESCRIPTIONS = {
    "sft": "Supervised fine-tuning on demonstrations (TRL SFTTrainer)",
    "dpo": "Direct Preference Optimization on preference pairs (TRL DPOTrainer)",
    "ppo": "PPO with a value head, per-token KL penalty, GAE (ptlab's own)",
    "grpo": "Group Relative Policy Optimization (TRL GRPOTrainer)",
    "rloo": "REINFORCE Leave-One-Out (TRL RLOOTrainer)",
    "best_of_n": "Best-of-N sampling from the starting model by the training signal (no training; a baseline)",
    "reward": "Reward model from preference pairs (TRL RewardTrainer), usable as PPO/GRPO reward",
}

# Longest sequence (prompt and answer, chat template applied) SFT, DPO and reward models train on by default
# (training options may set another); TRL truncates longer rows. The dataset preview counts the rows over it.
MAX_SEQUENCE_TOKENS = SFT_DPO_DEFAULT_LENGTH


def get(method: str):
    """The module implementing `method` (imported lazily: TRL is slow to import)."""
    if method not in DESCRIPTIONS:
        raise ValueError(f"unknown method {method!r}")
    return importlib.import_module(f"training.methods.{method}")
