"""What a method adapter receives, and the TRL arguments every adapter shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback

from training import options
from training.callbacks import RunHooks, TRLCallback
from training.config import BaseConfig
from training.tasks import Task


@dataclass
class MethodContext:
    cfg: BaseConfig
    task: Task
    tokenizer: Any
    model: Any  # the policy (a PeftModel when cfg.lora)
    reference: Any  # reference model, or None when the policy is a PeftModel (adapters off = reference)
    device: torch.device
    out_dir: Path
    hooks: RunHooks
    resume_from: str | None = None  # checkpoint folder to resume from
    reward_fn: Any = None  # the reward RL methods optimise: the task's gold reward or a reward model's
    staging_dir: Path | None = None  # this attempt's own folder: checkpoints are written here, then published

    @property
    def checkpoint_dir(self) -> Path:
        """Published checkpoints: where a resumed attempt looks."""
        return self.out_dir / "checkpoints"

    @property
    def write_dir(self) -> Path:
        """Where this attempt writes a checkpoint before publishing it."""
        return (self.staging_dir or self.out_dir / ".attempts" / "local") / "checkpoints"


@dataclass
class TrainResult:
    model: Any
    step: int  # the last optimizer step taken


def trl_args(config_cls, ctx: MethodContext, **extra):
    """TRL/transformers TrainingArguments for one ptlab run; CPU-safe (see ENVIRONMENT.md)."""
    cfg = ctx.cfg
    on_cpu = ctx.device.type == "cpu"
    bf16_ok = not on_cpu and torch.cuda.is_bf16_supported()
    # the training options (accumulation, schedule, precision, ...): training/options.py
    return config_cls(
        output_dir=str(ctx.write_dir),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        **options.trainer_args(cfg, device_type=ctx.device.type, bf16_supported=bf16_ok),
        logging_steps=1,
        save_strategy="steps" if cfg.checkpoint_every else "no",
        save_steps=cfg.checkpoint_every or 500,
        save_total_limit=2,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=on_cpu,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
        save_only_model=False,
        **extra,
    )


def train_trl(trainer, ctx: MethodContext) -> TrainResult:
    """Train with our callback attached and return where it ended."""
    trainer.remove_callback(PrinterCallback)  # our sink reports; Trainer's printer would spam stdout
    trainer.add_callback(TRLCallback(ctx.hooks, save_on_stop=bool(ctx.cfg.checkpoint_every),
                                     published_root=ctx.checkpoint_dir))
    if ctx.resume_from and int(Path(ctx.resume_from).name.split("-")[-1]) >= ctx.cfg.max_steps:
        # Killed after its last checkpoint: all steps are done, and HF would train one step too many.
        trainer._load_from_checkpoint(ctx.resume_from)
        return TrainResult(model=trainer.model, step=ctx.cfg.max_steps)
    trainer.train(resume_from_checkpoint=ctx.resume_from)
    return TrainResult(model=trainer.model, step=trainer.state.global_step)
