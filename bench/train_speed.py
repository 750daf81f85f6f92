"""Training speed benchmark (issue 2): seconds per optimizer step per method, the cost of our sink and
callbacks and of the uniform evaluation, and CPU efficiency.

    .venv/bin/python bench/train_speed.py [--write] [--threads 1]   # ~15 min on the shared 2-core CPU machine

On a machine with a GPU the runs train there (bf16, as the worker does), the peak is a bf16 matmul on the GPU,
the thread comparison is skipped, and --write fills the section "## Training speed on GPU (issue 2)".

1. s/step per method on `tiny` (each config's defaults, eval_every=1e6 and the evaluator stubbed out, so no
   evaluation runs; median of the steps after a warm-up) and on `demo` with LoRA (batch 4, 32 new tokens,
   a few steps: step 1 is the warm-up). A step is the interval between two consecutive step-end events.
2. Sink + callbacks vs the bare TRL trainer on the same config: "bare" is the method's TRL trainer with no
   TRLCallback, "ours" the same with a FileSink attached through TRLCallback; evaluation stubbed out in both.
   Measured twice: directly (time spent inside RunHooks.on_log/on_step_end, i.e. our callback and the sink,
   over the training loop time) and as the A/B difference of the loop times (bare and ours interleaved).
   The evaluation at default settings (eval_every=50, 16 prompts x 4 samples x 16 tokens, max_steps=200) is
   timed by wrapping Evaluator.__call__, as a share of the run's wall time (runner.run: load to save).
3. CPU efficiency: training tokens/s x 6 x parameters / measured float32 matmul FLOP/s. Training tokens are
   the non-padding tokens of every forward pass run with gradients (sampling, reference and old-policy
   passes are not counted), so generation-heavy methods score low by construction.

Nothing in training/ is modified: the bench wraps functions with unittest.mock.patch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import torch
from transformers import PrinterCallback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from training import evaluation, methods, models, runner  # noqa: E402
from training.callbacks import FileSink, RunHooks  # noqa: E402
from training.config import BaseConfig, from_dict  # noqa: E402
from training.evaluation import EvalSettings, Evaluator  # noqa: E402
from training.methods import common, dpo, grpo, ppo, sft  # noqa: E402
from training.methods.common import TrainResult  # noqa: E402
from training.tasks import get_task  # noqa: E402

DEVICE = models.pick_device("auto")
DEFAULTS = BaseConfig()
ON_GPU = DEVICE.type == "cuda"
HEADINGS = {False: "## Training speed (issue 2)", True: "## Training speed on GPU (issue 2)"}
ALL_METHODS = ("sft", "dpo", "grpo", "rloo", "ppo")
TRL_METHODS = ("sft", "dpo", "grpo", "rloo")
NO_EVAL = 1_000_000


# --- what one run records ------------------------------------------------------------------------------


@dataclass
class Record:
    method: str
    model: str
    variant: str  # ours | bare | eval
    steps: list[tuple[float, int]] = field(default_factory=list)  # (perf_counter, tokens so far) at step ends
    tokens: int = 0  # non-padding tokens of forward passes with gradients
    padded_tokens: int = 0
    params: int = 0
    loop_s: float = 0.0  # the training loop: trainer.train() for TRL, first PPO step to the end for PPO
    hooks_s: float = 0.0  # inside RunHooks.on_log / on_step_end (our callback + the sink)
    eval_s: float = 0.0
    eval_calls: int = 0
    eval_logprobs_s: float = 0.0  # of eval_s: the reference forward for the KL
    run_s: float = 0.0  # runner.run, load to save
    n_steps: int = 0
    _first_step: float = 0.0

    def step_stats(self, warmup: int) -> dict[str, float]:
        """Median seconds per step and tokens/s over the steps after `warmup` (step k = end k-1 to end k)."""
        pairs = list(zip(self.steps, self.steps[1:], strict=False))[max(0, warmup - 1):]
        if not pairs:
            return {}
        secs = [b[0] - a[0] for a, b in pairs]
        toks = [b[1] - a[1] for a, b in pairs]
        return {"s_step": statistics.median(secs), "tok_step": statistics.median(toks),
                "tok_s": sum(toks) / sum(secs), "n": len(secs)}


CURRENT: Record | None = None


class TimingSink(FileSink):
    """The CLI's FileSink, plus a timestamp at every step end (one perf_counter call)."""

    def progress(self, p) -> None:
        if p.phase == "training" and CURRENT is not None:
            _sync()
            CURRENT.steps.append((time.perf_counter(), CURRENT.tokens))
        super().progress(p)


# --- instrumentation (patches; training/ is untouched) ------------------------------------------------


def _decoder(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "model", base)


def _count_tokens(module, args, kwargs) -> None:
    if not torch.is_grad_enabled() or CURRENT is None:
        return
    ids = kwargs.get("input_ids", args[0] if args else None)
    embeds = kwargs.get("inputs_embeds")
    shape = ids.shape if ids is not None else embeds.shape[:2]
    mask = kwargs.get("attention_mask")
    padded = shape[0] * shape[1]
    CURRENT.padded_tokens += padded
    CURRENT.tokens += int(mask.sum()) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else padded


def _params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


_orig_get = methods.get
_orig_train_trl = common.train_trl


class _Method:
    def __init__(self, name: str):
        self.name, self.module = name, _orig_get(name)

    def train(self, ctx):
        rec = CURRENT
        rec.params = _params(ctx.model)
        handle = _decoder(ctx.model).register_forward_pre_hook(_count_tokens, with_kwargs=True)
        try:
            result = self.module.train(ctx)
        finally:
            handle.remove()
        if self.name == "ppo":
            rec.loop_s = time.perf_counter() - rec._first_step
        rec.n_steps = result.step
        return result


def _train_trl(trainer, ctx):
    rec = CURRENT
    if rec.variant == "bare":  # the TRL trainer as it comes: no TRLCallback (Trainer's printer off in both)
        trainer.remove_callback(PrinterCallback)
        t0 = time.perf_counter()
        trainer.train(resume_from_checkpoint=ctx.resume_from)
        rec.loop_s = time.perf_counter() - t0
        return TrainResult(model=trainer.model, step=trainer.state.global_step)
    inner = trainer.train

    def timed_train(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            rec.loop_s = time.perf_counter() - t0

    trainer.train = timed_train
    return _orig_train_trl(trainer, ctx)


def _sync() -> None:
    if ON_GPU:  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize()


def _timed(fn, attr: str, count: str | None = None):
    def wrapper(*a, **k):
        _sync()
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            _sync()
            if CURRENT is not None:
                setattr(CURRENT, attr, getattr(CURRENT, attr) + time.perf_counter() - t0)
                if count:
                    setattr(CURRENT, count, getattr(CURRENT, count) + 1)
    return wrapper


def _ppo_step(fn):
    def wrapper(self, step):
        if CURRENT is not None and not CURRENT._first_step:
            CURRENT._first_step = time.perf_counter()
        return fn(self, step)
    return wrapper


def _noop_evaluator(*args, **kwargs):
    return lambda model, step, **_: ({}, [])


def instrument(stack: ExitStack, *, evaluate: bool, save: bool) -> None:
    stack.enter_context(mock.patch.object(methods, "get", _Method))
    for mod in (sft, dpo, grpo):  # rloo trains through grpo.train
        stack.enter_context(mock.patch.object(mod, "train_trl", _train_trl))
    stack.enter_context(mock.patch.object(RunHooks, "on_log", _timed(RunHooks.on_log, "hooks_s")))
    stack.enter_context(mock.patch.object(RunHooks, "on_step_end", _timed(RunHooks.on_step_end, "hooks_s")))
    stack.enter_context(mock.patch.object(ppo.PPOTrainer, "step", _ppo_step(ppo.PPOTrainer.step)))
    stack.enter_context(mock.patch.object(Evaluator, "__call__", _timed(Evaluator.__call__, "eval_s", "eval_calls")))
    stack.enter_context(mock.patch.object(evaluation, "sequence_logprobs",
                                          _timed(evaluation.sequence_logprobs, "eval_logprobs_s")))
    if not evaluate:
        stack.enter_context(mock.patch.object(runner, "_evaluator", _noop_evaluator))
    if not save:
        stack.enter_context(mock.patch.object(runner, "save_model", lambda model, tok, target: target))


def run_one(cfg: dict, variant: str, workdir: Path, *, evaluate: bool = False, save: bool = False) -> Record:
    global CURRENT
    config = from_dict(cfg)
    rec = Record(method=config.method, model=config.model, variant=variant)
    folder = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{config.method}-{variant}-"))
    devnull = open(os.devnull, "w")  # noqa: SIM115 - FileSink writes plain progress lines there, as on a worker
    CURRENT = rec
    try:
        with ExitStack() as stack:
            instrument(stack, evaluate=evaluate, save=save)
            result = runner.run(config, TimingSink(folder, stream=devnull), folder, resume=False)
        rec.run_s = result.seconds
    finally:
        CURRENT = None
        devnull.close()
        shutil.rmtree(folder, ignore_errors=True)
    return rec


# --- the machine ----------------------------------------------------------------------------------------


def matmul_flops(n: int = 1024, seconds: float = 3.0) -> float:
    """Matmul FLOP/s, the best 0.25 s window: float32 n x n with all of torch's threads on the CPU, bf16
    8192 x 8192 on a GPU (the dtype runs train in there)."""
    if ON_GPU:
        n = 8192
    kw = {"device": DEVICE, "dtype": torch.bfloat16 if ON_GPU else torch.float32}
    a, b, c = torch.randn(n, n, **kw), torch.randn(n, n, **kw), torch.empty(n, n, **kw)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    _sync()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.25:
            torch.matmul(a, b, out=c)
            reps += 1
        _sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def cpu_model() -> str:
    if ON_GPU:
        return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class LoadMonitor(threading.Thread):
    """Samples the 1-minute load average every few seconds while the benchmark runs."""

    def __init__(self, every: float = 5.0):
        super().__init__(daemon=True)
        self.every, self.samples, self._stop_event = every, [], threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop_event.wait(self.every)

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.join()
        s = self.samples or [os.getloadavg()[0]]
        return {"min": min(s), "median": statistics.median(s), "max": max(s)}


def wait_for_load(threshold: float, max_wait: float) -> tuple[float, float]:
    """Wait until the 1-min load average is below `threshold` (at most `max_wait` s): (load, waited s)."""
    t0 = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - t0
        if load < threshold or waited >= max_wait:
            return load, waited
        print(f"load average {load:.2f} >= {threshold}: waiting ({waited:.0f}/{max_wait:.0f} s)", flush=True)
        time.sleep(min(30.0, max_wait - waited))


# --- the benchmark ---------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", flush=True)


def bench(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="ptlab-speed-"))
    out: dict = {"tiny": {}, "demo": {}, "ab": {}, "eval": {}}
    try:
        out["flops_start"] = matmul_flops()
        log(f"matmul {out['flops_start'] / 1e9:.1f} GFLOP/s")
        if not ON_GPU and torch.get_num_threads() != os.cpu_count():
            threads = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count())
            out["flops_all_cores"] = matmul_flops()
            torch.set_num_threads(threads)
            log(f"matmul on {os.cpu_count()} threads {out['flops_all_cores'] / 1e9:.1f} GFLOP/s")
        models.build_tiny()
        run_one({"method": "sft", "max_steps": 3, "eval_every": NO_EVAL}, "ours", workdir)  # warm imports/caches

        # 1 + 2: tiny, bare vs ours interleaved (TRL methods), ours only for PPO
        tiny = {"model": "tiny", "max_steps": args.tiny_steps, "eval_every": NO_EVAL}
        for m in args.methods:
            recs: dict[str, list[Record]] = {"ours": [], "bare": []}
            variants = ("bare", "ours") if m in TRL_METHODS else ("ours",)
            for r in range(args.repeats if m in TRL_METHODS else 1):  # PPO has no bare trainer to compare
                for v in variants if r % 2 == 0 else variants[::-1]:
                    recs[v].append(run_one({"method": m, **tiny}, v, workdir))
            out["tiny"][m] = recs["ours"]
            out["ab"][m] = recs["bare"]
            log(f"tiny {m}: " + ", ".join(f"{v} loop {[round(x.loop_s, 2) for x in rs]}" for v, rs in recs.items()))

        if not ON_GPU:  # torch threads: one vs one per core, back to back, on the cheapest step (20 steps each)
            one = {"method": "sft", "model": "tiny", "max_steps": 20, "eval_every": NO_EVAL}
            threads = torch.get_num_threads()
            try:
                for key, n in (("one_thread", 1), ("all_threads", os.cpu_count())):
                    torch.set_num_threads(n)
                    out[key] = run_one(one, "ours", workdir)
            finally:
                torch.set_num_threads(threads)
            log(f"tiny sft 20 steps: 1 thread {out['one_thread'].loop_s:.2f} s, {os.cpu_count()} threads "
                f"{out['all_threads'].loop_s:.2f} s")

        # 2b: evaluation at default settings, as a share of the run
        for m in args.methods:
            out["eval"][m] = run_one({"method": m, "model": "tiny"}, "eval", workdir, evaluate=True, save=True)
            e = out["eval"][m]
            log(f"eval {m}: {e.eval_calls} calls {e.eval_s:.2f} s of {e.run_s:.2f} s")

        # 1: demo with LoRA
        if args.demo_steps:
            demo = {"model": "demo", "lora": True, "batch_size": 4, "max_new_tokens": 32,
                    "max_steps": args.demo_steps, "eval_every": NO_EVAL}
            for m in args.methods:
                out["demo"][m] = [run_one({"method": m, **demo}, "ours", workdir)]
                log(f"demo {m}: {out['demo'][m][0].loop_s:.1f} s for {args.demo_steps} steps")
            out["demo_eval_s"] = demo_eval_seconds()
            log(f"demo eval call (default settings): {out['demo_eval_s'][0]:.1f} s")
        out["flops_end"] = matmul_flops()
        log(f"matmul {out['flops_end'] / 1e9:.1f} GFLOP/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def demo_eval_seconds() -> tuple[float, float]:
    """One uniform evaluation at default settings (16 x 4 x 16) of `demo` with LoRA adapters:
    (seconds, of which in the policy and reference log-prob forwards)."""
    global CURRENT
    device = DEVICE
    tok = models.load_tokenizer("demo")
    policy = models.add_lora(models.load_model("demo", device), 16, 32)
    evaluator = Evaluator(get_task("arithmetic"), tok, None, EvalSettings(), device)
    CURRENT = Record("eval", "demo", "eval")
    try:
        with mock.patch.object(evaluation, "sequence_logprobs",
                               _timed(evaluation.sequence_logprobs, "eval_logprobs_s")):
            evaluator(policy, 0)  # warm-up (CUDA kernels, allocator)
            CURRENT.eval_logprobs_s = 0.0
            _sync()
            t0 = time.perf_counter()
            evaluator(policy, 0)
            _sync()
            return time.perf_counter() - t0, CURRENT.eval_logprobs_s
    finally:
        CURRENT = None


# --- the report -------------------------------------------------------------------------------------------


def _pooled(recs: list[Record], warmup: int) -> dict[str, float]:
    """Step statistics over all repeats' steps after the warm-up."""
    stats = [r.step_stats(warmup) for r in recs]
    secs = [s["s_step"] for s in stats if s]
    if not secs:
        return {}
    tok_s = [s["tok_s"] for s in stats if s]
    return {"s_step": statistics.median(secs), "tok_step": statistics.median(s["tok_step"] for s in stats if s),
            "tok_s": statistics.median(tok_s), "params": recs[0].params}


def report(out: dict, meta: dict) -> str:
    args = argparse.Namespace(**meta["args"])
    load, threads, cores = meta["load"], meta["threads"], meta["nproc"]
    flops = max(out["flops_start"], out.get("flops_end", 0.0))
    gpu = meta.get("gpu", False)
    unit, scale = ("TFLOP/s", 1e12) if gpu else ("GFLOP/s", 1e9)
    eff = "GPU eff." if gpu else "CPU eff."
    fmt_eff = lambda s: f"{100 * s['tok_s'] * 6 * s['params'] / flops:.2g}%" if s else "-"  # noqa: E731
    lines = [HEADINGS[gpu], "",
             f"Command: `{meta['command']}`  ",
             f"Date: {meta['date']}; wall time {meta['wall_s'] / 60:.1f} min  ",
             f"Machine: nproc {cores}, {'GPU' if gpu else 'CPU'} \"{meta['cpu']}\", torch {meta['torch']} with "
             f"{threads} threads; {'bf16 8192x8192 matmul on the GPU' if gpu else 'float32 1024x1024 matmul'} "
             f"{flops / scale:.1f} {unit} "
             f"(start {out['flops_start'] / scale:.1f}, end {out.get('flops_end', 0) / scale:.1f}"
             + (f"; {out['flops_all_cores'] / 1e9:.1f} on {cores} threads" if "flops_all_cores" in out else "")
             + ")  ",
             f"Load average (1 min) during the run: min {load['min']:.2f}, median {load['median']:.2f}, "
             f"max {load['max']:.2f} (at start {meta['start_load']:.2f}, after waiting {meta['waited_s']:.0f} s for < "
             f"{args.wait_load})" + ("." if gpu else "; other engineers share this 2-core machine, so read the "
                                                 "numbers with it."), ""]
    p_tiny = next(iter(out["tiny"].values()))[0].params if out["tiny"] else 0
    p_demo = next(iter(out["demo"].values()))[0].params if out["demo"] else 0
    lines += [f"### Seconds per optimizer step (tiny: {p_tiny / 1e6:.2f} M params, defaults, {args.tiny_steps} steps "
              f"x {args.repeats} runs (PPO: 1), median after {args.warmup} warm-up steps; demo: {p_demo / 1e6:.1f} M params "
              f"+ LoRA r=16, batch 4, 32 new tokens, {args.demo_steps} steps, median of steps 2..)", "",
              f"| method | tiny s/step | tiny train tok/step | tiny tok/s | tiny {eff} | demo+LoRA s/step "
              f"| demo tok/step | demo tok/s | demo {eff} |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in args.methods:
        t = _pooled(out["tiny"][m], args.warmup) if out["tiny"].get(m) else {}
        d = _pooled(out["demo"][m], 1) if out["demo"].get(m) else {}
        cell = lambda s, k, f: format(s[k], f) if s else "-"  # noqa: E731
        lines.append(f"| {m} | {cell(t, 's_step', '.4f')} | {cell(t, 'tok_step', '.0f')} | {cell(t, 'tok_s', '.0f')} "
                     f"| {fmt_eff(t)} | {cell(d, 's_step', '.2f')} | {cell(d, 'tok_step', '.0f')} "
                     f"| {cell(d, 'tok_s', '.0f')} | {fmt_eff(d)} |")
    lines += ["", f"{eff} = training tokens/s x 6 x parameters / matmul FLOP/s; training tokens = non-padding "
              "tokens of forward passes with gradients (generation, reference and old-policy passes excluded). "
              "With LoRA the 6N rule overstates the work (no weight gradients for frozen weights).", ""]

    lines += ["### Cost of our sink + callbacks and of the uniform evaluation (tiny)", "",
              "| method | loop s bare (median) | loop s ours (median) | A/B overhead | in sink+callbacks "
              "(direct) | eval calls | eval s (in the reference forward) | run s | eval share of run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for m in args.methods:
        ours, bare, ev = out["tiny"].get(m, []), out["ab"].get(m, []), out["eval"].get(m)
        lo = statistics.median(r.loop_s for r in ours) if ours else 0.0
        lb = statistics.median(r.loop_s for r in bare) if bare else 0.0
        direct = statistics.median(r.hooks_s / r.loop_s for r in ours) if ours else 0.0
        ab = f"{100 * (lo - lb) / lb:+.1f}%" if lb else "n/a (ours)"
        evs = (f"{ev.eval_calls} | {ev.eval_s:.2f} ({100 * ev.eval_logprobs_s / ev.eval_s:.0f}%) | {ev.run_s:.2f} "
               f"| {100 * ev.eval_s / ev.run_s:.1f}%" if ev else "- | - | - | -")
        lines.append(f"| {m} | {f'{lb:.2f}' if lb else '-'} | {lo:.2f} | {ab} | {100 * direct:.2f}% | {evs} |")
    direct = {m: statistics.median(r.hooks_s / r.loop_s for r in out["tiny"][m]) for m in args.methods
              if out["tiny"].get(m)}
    share = {m: ev.eval_s / ev.run_s for m, ev in out["eval"].items()}
    lines += ["", "Goals: sink + callbacks < 2% of training time (direct column; the A/B column is the same "
              "difference seen through run-to-run noise); evaluation at default settings (max_steps 200, "
              "eval_every 50: steps 0, 50, ..., 200; 16 prompts x 4 samples x 16 tokens) < 15% of the run.", "",
              f"- sink + callbacks: {_verdict(direct, 0.02)}",
              f"- evaluation: {_verdict(share, 0.15)}"]
    if "one_thread" in out:
        one, alls = (_pooled([out[k]], args.warmup) for k in ("one_thread", "all_threads"))
        lines += ["", f"Threads: tiny sft {one['s_step']:.4f} s/step with 1 torch thread, {alls['s_step']:.4f} with "
                  f"{cores} (20 steps each, back to back, same load)."]
    if out.get("demo_eval_s") and out["demo"]:
        e, e_kl = out["demo_eval_s"]
        steps, every = DEFAULTS.max_steps, DEFAULTS.eval_every
        n = steps // every + 1 + (steps % every > 0)  # step 0, every `every` steps, the end
        proj = []
        for m in args.methods:
            d = _pooled(out["demo"][m], 1)
            if d:
                proj.append(f"{m} {100 * n * e / (n * e + steps * d['s_step']):.0f}%")
        lines += ["", f"demo + LoRA: one evaluation at default settings takes {e:.2f} s ({100 * e_kl / e:.0f}% in the "
                  f"reference forward); with the demo step times above, the {n} evaluations of a run at the default "
                  f"max_steps {steps} / eval_every {every} would be " + ", ".join(proj) + " of training + eval "
                  "(an upper bound: the step-0 evaluation skips the reference forward)."]
    return "\n".join(lines) + "\n"


def _verdict(values: dict[str, float], goal: float) -> str:
    missed = {m: v for m, v in values.items() if v >= goal}
    worst = max(values.values(), default=0.0)
    if not missed:
        return f"**met** for every method (worst {100 * worst:.2f}%)"
    return "**missed** for " + ", ".join(f"{m} ({100 * v:.1f}%)" for m, v in missed.items()) + (
        "; met for " + ", ".join(m for m in values if m not in missed) if len(missed) < len(values) else "")


def write_section(path: Path, section: str) -> None:
    """Replace our section of RESULTS.md (from our heading to the next '## ' heading), or append it."""
    heading = section.split("\n", 1)[0]
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def measure(args, argv: list[str] | None) -> tuple[dict, dict]:
    args.methods = [m for m in args.methods.split(",") if m]
    if args.threads:
        torch.set_num_threads(args.threads)
    start_load, waited = wait_for_load(args.wait_load, args.wait_max)
    meta = {"command": ".venv/bin/python bench/train_speed.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(),
            "cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "start_load": start_load, "waited_s": waited, "gpu": ON_GPU,
            "args": {k: getattr(args, k) for k in ("methods", "tiny_steps", "warmup", "repeats", "demo_steps",
                                                   "wait_load")}}
    monitor = LoadMonitor()
    monitor.start()
    t0 = time.monotonic()
    out = bench(args)
    meta["wall_s"] = time.monotonic() - t0
    meta["load"] = monitor.stop()
    return out, meta


def _records(raw: dict) -> dict:
    """Rebuild the Records of a --json dump."""
    rec = lambda d: Record(**d)  # noqa: E731
    out = dict(raw)
    for key in ("tiny", "demo", "ab"):
        out[key] = {m: [rec(d) for d in v] for m, v in raw.get(key, {}).items()}
    out["eval"] = {m: rec(d) for m, d in raw.get("eval", {}).items()}
    for key in ("one_thread", "all_threads"):
        if key in raw:
            out[key] = rec(raw[key])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--tiny-steps", type=int, default=60, help="steps per tiny run for the s/step figures")
    p.add_argument("--warmup", type=int, default=5, help="tiny steps left out of the median")
    p.add_argument("--repeats", type=int, default=2, help="tiny runs per TRL method and variant (bare, ours)")
    p.add_argument("--demo-steps", type=int, default=4, help="steps per demo run (0: skip demo)")
    p.add_argument("--wait-load", type=float, default=1.5, help="start when the 1-min load average is below this")
    p.add_argument("--wait-max", type=float, default=900, help="seconds to wait for that at most")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    p.add_argument("--write", action="store_true", help="replace our section of --results with the tables")
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    p.add_argument("--json", help="also dump the raw records here")
    p.add_argument("--render", metavar="JSON", help="only print (and --write) the tables of an earlier --json dump")
    args = p.parse_args(argv)
    if args.render:
        raw = json.loads(Path(args.render).read_text())
        out, meta = _records(raw["out"]), raw["meta"]
    else:
        out, meta = measure(args, argv)
    section = report(out, meta)
    print(section)
    if args.json and not args.render:
        Path(args.json).write_text(json.dumps({"meta": meta, "out": out}, default=asdict, indent=1))
    if args.write:
        write_section(Path(args.results), section)
        print(f"wrote {section.splitlines()[0]!r} in {args.results}")


if __name__ == "__main__":
    main()
