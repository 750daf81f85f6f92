"""DPO on the task's preference pairs (TRL's DPOTrainer); the reference is the run's reference model. Pairs with
a weight are drawn in proportion to it (TRL computes the DPO loss inline, with no per-pair weight to set)."""

from __future__ import annotations

import torch
import trl
from datasets import Dataset

from training import options
from training.methods.common import MethodContext, TrainResult, train_trl, trl_args


class WeightedSampler(torch.utils.data.WeightedRandomSampler):
    """As many draws an epoch as there are rows, with replacement, each row with probability weight / total; the
    draws depend on the seed and the epoch alone, so a resumed run replays the batches it skips."""

    def __init__(self, weights: list[float], seed: int):
        super().__init__(weights, num_samples=len(weights), replacement=True)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by accelerate's data loader at each epoch
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class WeightedDPOTrainer(trl.DPOTrainer):
    """TRL's DPOTrainer, sampling by a `weight` column when the dataset has one (weights act as sampling
    probabilities: in expectation, the loss of each pair multiplied by its weight over the total weight)."""

    def _get_train_sampler(self, train_dataset=None):
        # The prepared dataset still holds the weights; the one passed in has lost every column TRL does not use.
        rows = self.train_dataset
        if "weight" not in (getattr(rows, "column_names", None) or ()):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return WeightedSampler(rows["weight"], seed)


def train(ctx: MethodContext) -> TrainResult:
    return train_trl(build(ctx), ctx)


def build(ctx: MethodContext) -> WeightedDPOTrainer:
    cfg = ctx.cfg
    losses = {"loss_type": [cfg.loss_type]}
    if cfg.sft_weight:
        losses = {"loss_type": [cfg.loss_type, "sft"], "loss_weights": [1.0, cfg.sft_weight]}
    args = trl_args(trl.DPOConfig, ctx, beta=cfg.beta, **options.method_args(cfg), **losses)
    return WeightedDPOTrainer(model=ctx.model, ref_model=ctx.reference, args=args,
                              train_dataset=Dataset.from_list(ctx.task.dpo_rows()), processing_class=ctx.tokenizer)
