"""Train one run from a config: load, evaluate at step 0, train, evaluate at the end, save.

`run(cfg, sink, out_dir)` is the single entry point of the CLI and of the web app's worker."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from training import methods, models  # noqa: E402
from training.callbacks import MetricSink, Progress, RunHooks  # noqa: E402
from training.config import BaseConfig  # noqa: E402
from training.evaluation import EvalSettings, Evaluator  # noqa: E402
from training.methods.common import MethodContext  # noqa: E402
from training.rewards import SignalEnv  # noqa: E402
from training.rewards import build as build_signal  # noqa: E402
from training.tasks import task_for  # noqa: E402

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()


@dataclass
class RunResult:
    step: int
    stopped: bool
    final_metrics: dict[str, float]
    model_dir: Path
    seconds: float


def run(cfg: BaseConfig, sink: MetricSink, out_dir: str | Path, *, resume: bool = True) -> RunResult:
    t0 = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.to_json())
    sink.progress(Progress(step=0, total=cfg.max_steps, phase="loading", elapsed_s=0.0, eta_s=None))
    transformers.set_seed(cfg.seed)

    device = models.pick_device(cfg.device)
    task = task_for(cfg)
    if hasattr(task, "summary"):  # which version of which dataset this run trained on
        (out / "dataset.json").write_text(json.dumps(task.summary(), indent=2, sort_keys=True))
    tokenizer = models.load_tokenizer(cfg.model)
    policy, reference = _load_models(cfg, device, tokenizer)

    # This attempt writes checkpoints and the model in a folder of its own, then publishes each by a rename
    # through the sink: an attempt that lost its run (the web app's sink refuses) never replaces them.
    staging = out / ".attempts" / str(getattr(sink, "attempt", "local"))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    resume_from = last_checkpoint(out / "checkpoints") if resume else None
    start_step = checkpoint_step(resume_from) if resume_from else 0
    # Steps after the checkpoint are trained, and logged, again; a fresh start forgets every earlier row.
    sink.truncate_after(start_step if resume_from else -1)

    final: dict[str, float] = {}
    signals = Signals(cfg, task, device)
    evaluate = _evaluator(cfg, task, tokenizer, reference, device, signals)
    starts_as_reference = cfg.reference_model in ("", cfg.model)  # LoRA adapters start as the identity

    def log_eval(step: int, model) -> None:
        metrics, samples = evaluate(model, step, is_reference=step == 0 and starts_as_reference)
        sink.log_metrics(step, metrics)
        if samples:
            sink.log_samples(step, samples)
        final.clear()
        final.update(metrics)

    hooks = RunHooks(sink, cfg.max_steps, cfg.eval_every, log_eval, start_step=start_step)
    if start_step == 0:
        hooks.run_eval(0, policy)
    elif start_step % cfg.eval_every == 0:
        hooks.last_eval_step = start_step  # evaluated before its checkpoint was written: logged already
    reward_fn = signals.training
    ctx = MethodContext(cfg=cfg, task=task, tokenizer=tokenizer, model=policy, reference=reference, device=device,
                        out_dir=out, hooks=hooks, resume_from=str(resume_from) if resume_from else None,
                        reward_fn=reward_fn, staging_dir=staging)
    result = methods.get(cfg.method).train(ctx)
    model_dir = out / "model"
    if hooks.lost:  # taken away from this attempt: no final evaluation, no model
        return RunResult(step=result.step, stopped=True, final_metrics={}, model_dir=model_dir,
                         seconds=time.monotonic() - t0)
    if not hooks.stopped:
        # A stop request (a cancel) ends the run at the step it came after: no final evaluation, which on a
        # CPU takes longer than the cancel grace period; the model is saved, the last checkpoint resumes it.
        hooks.run_eval(result.step, result.model)
    hooks.report("saving", result.step)
    if hooks.publish(save_model(result.model, tokenizer, staging / "model"), model_dir):
        shutil.rmtree(out / ".attempts", ignore_errors=True)  # every attempt's leftovers: the run is done
    hooks.report("done", result.step)
    return RunResult(step=result.step, stopped=hooks.stopped or hooks.lost, final_metrics=dict(final),
                     model_dir=model_dir, seconds=time.monotonic() - t0)


def _load_models(cfg: BaseConfig, device: torch.device, tokenizer):
    if cfg.method == "reward":
        from transformers import AutoModelForSequenceClassification

        policy = models.load_model(cfg.model, device, cls=AutoModelForSequenceClassification, num_labels=1)
        policy.config.pad_token_id = tokenizer.pad_token_id
        return policy, None
    policy = models.load_model(cfg.model, device)
    if cfg.lora:
        policy = models.add_lora(policy, cfg.lora_r, cfg.lora_alpha)
    if cfg.lora and not cfg.reference_model:
        return policy, None  # the reference is the policy with its adapters turned off
    reference = models.load_model(cfg.reference_model or cfg.model, device).eval()
    reference.requires_grad_(False)
    return policy, reference


class Signals:
    """The run's reward signals, each built and loaded once: what RL methods optimise (`training`), what the
    uniform evaluation scores with (`gold`: None means the task's own gold reward, with its components), the
    training signal again as `proxy` when it differs from the gold one, and the `monitors`."""

    def __init__(self, cfg: BaseConfig, task, device):
        env = SignalEnv(device=device, task=task)
        gold_spec = cfg.gold_reward or "task"
        train_spec = cfg.training_signal() if hasattr(cfg, "training_signal") else None
        self.gold = None if gold_spec == "task" else _ready(gold_spec, env)
        self.training = None
        if train_spec is not None:
            self.training = task.reward_fn() if train_spec == "task" else (
                self.gold if train_spec == gold_spec else _ready(train_spec, env))
        self.proxy = self.training if train_spec is not None and train_spec != gold_spec else None
        self.monitors = tuple(_ready(spec, env) for spec in cfg.monitors)


def _ready(spec, env: SignalEnv):
    signal = build_signal(spec)
    signal.setup(env)
    return signal


def _evaluator(cfg: BaseConfig, task, tokenizer, reference, device, signals: Signals):
    if cfg.method == "reward":
        from training.methods.reward import pairwise_accuracy

        held = task.eval_examples(cfg.eval_prompts)
        return lambda model, step, **_: (pairwise_accuracy(model, tokenizer, held, device), [])
    settings = EvalSettings(prompts=cfg.eval_prompts, samples=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens)
    if cfg.method == "best_of_n":
        from training.methods.best_of_n import BestOfNEvaluator

        # Picks by the training signal (the gold one when they are the same), scored by the gold like every run.
        return BestOfNEvaluator(task, tokenizer, reference, settings, device, cfg.n, signal=signals.proxy,
                                proxy_is_signal=signals.proxy is not None, gold_reward=signals.gold,
                                monitors=signals.monitors)
    return Evaluator(task, tokenizer, reference, settings, device, proxy_reward=signals.proxy,
                     gold_reward=signals.gold, monitors=signals.monitors)


def save_model(model, tokenizer, target: Path) -> Path:
    """Final weights loadable with from_pretrained (LoRA adapters merged in), written to `target`."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint. TRL writes checkpoint-N in place and trainer_state.json last, so a
    folder without it is what a worker killed mid-save left behind."""
    found = [p for p in folder.glob("checkpoint-*")
             if p.is_dir() and p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found, key=checkpoint_step, default=None)


def checkpoint_step(path: str | Path) -> int:
    return int(Path(path).name.split("-")[-1])
