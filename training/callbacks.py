"""Where a run's metrics, samples and progress go, and how a stop request gets in.

`MetricSink` is the protocol the CLI (files) and the web app (database rows) implement.
`RunHooks` is what every trainer, TRL's or our PPO, calls; `TRLCallback` adapts it to TRL.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from training.folders import replace_folder


@dataclass
class Progress:
    step: int
    total: int
    phase: str  # loading | evaluating | training | saving | done
    elapsed_s: float
    eta_s: float | None


@dataclass
class Sample:
    step: int
    prompt: str
    completion: str
    reward: float
    index: int = 0  # which of the K samples of this prompt
    prompt_id: int = 0


class MetricSink(Protocol):
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_samples(self, step: int, samples: list[Sample]) -> None: ...

    def progress(self, progress: Progress) -> None: ...

    def should_stop(self) -> bool: ...

    def truncate_after(self, step: int) -> None:
        """Forget what was logged after `step` (-1: everything): a resumed run logs those steps again."""

    # Optional: `publish(source, target) -> bool` moves a finished folder (a checkpoint, the final model) into
    # place; a sink that can lose its run (the web app's) refuses once it has. Without it: replace_folder.
    # Optional: `lost: bool`, true once the run was taken away from this attempt (nothing more is written).


class FileSink:
    """The CLI's sink: JSONL files in the run folder and a progress bar on a terminal."""

    def __init__(self, out: Path, stream=sys.stderr):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.stream = stream
        self._bar = None
        self._stop_file = self.out / "STOP"  # touch it to request a clean stop

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._append("metrics.jsonl", {"step": step, "time": time.time(), **metrics})
        if "eval/reward" in metrics:
            self._write(f"step {step}: eval/reward={metrics['eval/reward']:.4f} eval/kl={metrics['eval/kl']:.4f}")

    def log_samples(self, step: int, samples: list[Sample]) -> None:
        with open(self.out / "samples.jsonl", "a") as f:
            for s in samples:
                f.write(json.dumps(asdict(s)) + "\n")

    def progress(self, p: Progress) -> None:
        if not self.stream.isatty():
            if p.phase in ("training",) and p.step % max(1, p.total // 10) == 0 or p.phase != "training":
                eta = f" eta {p.eta_s:.0f}s" if p.eta_s is not None else ""
                print(f"[{p.phase}] step {p.step}/{p.total}{eta}", file=self.stream, flush=True)
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=p.total, file=self.stream, unit="step", dynamic_ncols=True)
        self._bar.set_description(p.phase)
        self._bar.n = p.step
        self._bar.refresh()
        if p.phase == "done":
            self._bar.close()

    def should_stop(self) -> bool:
        return self._stop_file.exists()

    def truncate_after(self, step: int) -> None:
        for name in ("metrics.jsonl", "samples.jsonl"):
            path = self.out / name
            if path.exists():
                rows = [r for r in path.read_text().splitlines() if json.loads(r)["step"] <= step]
                path.write_text("".join(r + "\n" for r in rows))

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.out / name, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


class RunHooks:
    """Called by every trainer: forwards training logs, evaluates on schedule, reports progress,
    relays stop requests. `evaluate(step, model)` is supplied by the runner."""

    keep_checkpoints = 2  # published checkpoints kept (the newest)

    def __init__(self, sink: MetricSink, total: int, eval_every: int, evaluate, start_step: int = 0):
        self.sink = sink
        self.total = total
        self.eval_every = eval_every
        self.evaluate = evaluate
        self.start_step = start_step
        self.last_eval_step = -1
        self.stopped = False
        self._t0 = time.monotonic()

    def on_log(self, step: int, logs: dict[str, Any]) -> None:
        metrics = {_train_key(k): float(v) for k, v in logs.items() if _is_number(v) and k not in _DROP}
        if metrics:
            self.sink.log_metrics(step, metrics)

    def on_step_end(self, step: int, model) -> bool:
        """Returns True when training should stop now."""
        if step % self.eval_every == 0 and step < self.total:
            self.run_eval(step, model)
        self.report("training", step)
        if self.sink.should_stop():
            self.stopped = True
        return self.stopped

    def run_eval(self, step: int, model) -> None:
        if step == self.last_eval_step:
            return
        self.report("evaluating", step)
        self.evaluate(step, model)
        self.last_eval_step = step

    @property
    def lost(self) -> bool:
        """The run was taken away from this attempt: stop, and write nothing more."""
        return bool(getattr(self.sink, "lost", False))

    def publish(self, source: Path, target: Path) -> bool:
        """Move a finished folder into place through the sink (fenced in the web app)."""
        publish = getattr(self.sink, "publish", replace_folder)
        return publish(source, target)

    def publish_checkpoint(self, staged: Path, published_root: Path) -> bool:
        """A checkpoint written in this attempt's own folder goes to `published_root` (where a resumed attempt
        looks), then all but the newest few there go."""
        staged = Path(staged)
        if not self.publish(staged, Path(published_root) / staged.name):
            shutil.rmtree(staged, ignore_errors=True)
            return False
        found = [p for p in Path(published_root).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        for old in sorted(found, key=lambda p: int(p.name.split("-")[-1]))[:-self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return True

    def report(self, phase: str, step: int) -> None:
        elapsed = time.monotonic() - self._t0
        done = step - self.start_step
        eta = elapsed / done * (self.total - step) if done > 0 else None
        self.sink.progress(Progress(step=step, total=self.total, phase=phase, elapsed_s=elapsed, eta_s=eta))


class TRLCallback(TrainerCallback):
    """Adapts RunHooks to transformers' Trainer events."""

    def __init__(self, hooks: RunHooks, save_on_stop: bool = False, published_root: Path | None = None):
        self.hooks = hooks
        self.save_on_stop = save_on_stop
        self.published_root = published_root

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.hooks.on_log(state.global_step, logs)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.hooks.on_step_end(state.global_step, model):
            control.should_training_stop = True
            # keep a checkpoint of where we stopped (not when the run was lost: nothing more is written)
            control.should_save = self.save_on_stop and not self.hooks.lost

    def on_save(self, args, state, control, **kwargs):
        # Trainer wrote checkpoint-N in this attempt's folder (output_dir): publish it.
        staged = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if staged.is_dir() or args.world_size > 1:  # several processes: each takes part in the publish
            self.hooks.publish_checkpoint(staged, self.published_root)


_DROP = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def _train_key(key: str) -> str:
    # TRL keys verbatim under train/ (DESIGN.md): "loss" -> "train/loss", "rewards/margins" -> "train/rewards/margins"
    return key if key.startswith("train/") else f"train/{key}"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
