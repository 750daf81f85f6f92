"""RLOO (TRL's RLOOTrainer): GRPO's loop with a leave-one-out baseline."""

from __future__ import annotations

import trl

from training.methods import grpo
from training.methods.common import MethodContext, TrainResult


def train(ctx: MethodContext) -> TrainResult:
    return grpo.train(ctx, config_cls=trl.RLOOConfig, trainer_cls=trl.RLOOTrainer)
