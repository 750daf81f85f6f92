"""GPU benchmark for a 15-minute loan of one H100/H200 (issue 18): `demo` with full fine-tuning at realistic
settings through the real runner, one command:

    .venv/bin/python bench/gpu.py              # on the GPU; appends a section to bench/RESULTS.md
    .venv/bin/python bench/gpu.py --smoke      # the same path on the CPU with `tiny` and a few steps (no write)

Per method (SFT 32 x 512 tokens packed, DPO 32 pairs, GRPO 256 completions per step, PPO 64 rollouts):
- s/step: median over the steps after the first (step ends as the runner reports them);
- training tokens/s (TRL's and our PPO's `num_tokens`: tokens of the forward passes with gradients) and model
  FLOP utilisation = 6 x parameters x training tokens/s / the measured bf16 matmul peak (8192^2; fp32 1024^2 on
  the CPU): the training passes only, so methods that sample score lower by construction;
- generation tokens/s while training: new tokens / seconds inside `generate` (completion tokens only);
- each phase's share of the training loop: generation, evaluation, the rest (forward/backward/optimizer,
  reference and old-policy passes, rewards);
- the uniform evaluation's share of a default run (eval_every 50, 200 steps: 5 evaluations) at this method's
  step time: 5 x one evaluation / (5 x one evaluation + 200 x s/step).
Goals (issue 18): SFT >= 20% MFU; GRPO generation >= 20,000 tokens/s; evaluation < 10% of a default run.

`demo` is SmolLM2-135M-Instruct from the cache (`make demo-model`). A GPU node without it (no network, files
too big to carry) gets `demo-shaped`: a randomly initialised Llama of the same shape (30 x 576, vocab 49152)
with tiny's tokenizer: the same compute per token, random text (it seldom ends early: full-length samples).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training import evaluation, models, runner, sizing  # noqa: E402
from training.config import from_dict  # noqa: E402

DEMO_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)

# name -> (config, steps). Full fine-tuning, bf16 (precision auto), the evaluation at its defaults.
GPU_RUNS = {
    "sft": {"batch_size": 32, "max_prompt_length": 256, "max_completion_length": 256, "packing": True,
            "learning_rate": 1e-5, "max_steps": 10},
    "dpo": {"batch_size": 32, "learning_rate": 1e-6, "max_steps": 8},
    "grpo": {"batch_size": 256, "num_generations": 8, "max_completion_length": 128, "learning_rate": 1e-6,
             "max_steps": 4},
    "ppo": {"batch_size": 64, "num_minibatches": 4, "ppo_epochs": 2, "max_completion_length": 128,
            "learning_rate": 1e-6, "max_steps": 4},
}
SMOKE_RUNS = {
    "sft": {"batch_size": 8, "max_prompt_length": 32, "max_completion_length": 32, "packing": True, "max_steps": 3},
    "dpo": {"batch_size": 4, "max_steps": 3},
    "grpo": {"batch_size": 8, "num_generations": 4, "max_completion_length": 8, "max_steps": 3},
    "ppo": {"batch_size": 8, "num_minibatches": 2, "max_completion_length": 8, "max_steps": 3},
}
EVAL = {"eval_prompts": 16, "eval_samples": 4, "max_new_tokens": 16}  # the config's defaults
DEFAULT_RUN_STEPS, DEFAULT_EVALS = 200, 5


class Timer:
    """Seconds and new tokens inside `generate`, and seconds inside the uniform evaluation (generation there
    counted as evaluation, not as training's generation)."""

    def __init__(self):
        self.gen_s = self.eval_s = 0.0
        self.gen_tokens = self.evals = 0
        self._in_eval = False

    def install(self):
        from transformers.generation.utils import GenerationMixin

        real_generate, real_eval = GenerationMixin.generate, evaluation.Evaluator.__call__
        timer = self

        def generate(model, *args, **kwargs):
            t = time.perf_counter()
            out = real_generate(model, *args, **kwargs)
            _sync()
            if not timer._in_eval:
                timer.gen_s += time.perf_counter() - t
                ids = kwargs.get("input_ids", args[0] if args else None)
                seqs = out.sequences if hasattr(out, "sequences") else out
                if ids is not None:
                    timer.gen_tokens += int(seqs.shape[0] * (seqs.shape[1] - ids.shape[1]))
            return out

        def evaluate(ev, *args, **kwargs):
            t = time.perf_counter()
            timer._in_eval = True
            try:
                return real_eval(ev, *args, **kwargs)
            finally:
                timer._in_eval = False
                _sync()
                timer.eval_s += time.perf_counter() - t
                timer.evals += 1

        GenerationMixin.generate, evaluation.Evaluator.__call__ = generate, evaluate
        return lambda: (setattr(GenerationMixin, "generate", real_generate),
                        setattr(evaluation.Evaluator, "__call__", real_eval))


class TimingSink:
    def __init__(self, timer: Timer):
        self.timer = timer
        self.step_ends: list[tuple[float, int, float]] = []  # (time, step, seconds in generate so far)
        self.metrics: dict[int, dict[str, float]] = {}

    def log_metrics(self, step, metrics):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_samples(self, step, samples):
        pass

    def progress(self, p):
        if p.phase == "training" and (not self.step_ends or self.step_ends[-1][1] != p.step):
            _sync()
            self.step_ends.append((time.perf_counter(), p.step, self.timer.gen_s))

    def should_stop(self):
        return False

    def truncate_after(self, step):
        pass


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak(on_gpu: bool, seconds: float) -> float:
    n = 8192 if on_gpu else 1024
    kw = {"device": "cuda" if on_gpu else "cpu", "dtype": torch.bfloat16 if on_gpu else torch.float32}
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


def demo_model(folder: Path) -> tuple[str, str]:
    """(model for the configs, its description): `demo` if cached, else a demo-shaped random model."""
    cached = models.cache_dir() / "models" / "smollm2-135m-instruct"
    if (cached / "config.json").is_file():
        return "demo", "demo (SmolLM2-135M-Instruct)"
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = models.load_tokenizer("tiny")
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        config = LlamaConfig(**DEMO_SHAPE, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             bos_token_id=tok.bos_token_id)
        LlamaForCausalLM(config).save_pretrained(folder)
        tok.save_pretrained(folder)
    return str(folder), "demo-shaped (random SmolLM2-135M shape, tiny's tokenizer; demo is not cached here)"


def bench_method(method: str, settings: dict, model: str, out: Path, peak: float, params: int) -> dict:
    timer = Timer()
    restore = timer.install()
    sink = TimingSink(timer)
    cfg = from_dict({"method": method, "model": model, **EVAL, "eval_every": 1_000_000, "seed": 0, **settings})
    t0 = time.perf_counter()
    try:
        runner.run(cfg, sink, out / method, resume=False)
    finally:
        restore()
    run_s = time.perf_counter() - t0
    ends = sink.step_ends
    secs = [b[0] - a[0] for a, b in zip(ends, ends[1:], strict=False)]
    s_step = statistics.median(secs) if secs else float("nan")
    loop_s = ends[-1][0] - ends[0][0] if len(ends) > 1 else float("nan")
    tokens = [m.get("train/num_tokens") for _, m in sorted(sink.metrics.items()) if "train/num_tokens" in m]
    tok_step = (tokens[-1] - tokens[0]) / (len(tokens) - 1) if len(tokens) > 1 else float("nan")
    if method == "ppo":  # our PPO counts each rollout's tokens once; its updates pass over them ppo_epochs times
        tok_step *= cfg.ppo_epochs
    tok_s = tok_step / s_step if secs else float("nan")
    one_eval = timer.eval_s / max(1, timer.evals)
    # shares of the measured steps (after the first, a warm-up): no evaluation runs between them
    measured = max(1, len(secs))
    gen_share = (ends[-1][2] - ends[0][2]) / loop_s if len(ends) > 1 else 0.0
    default_eval = DEFAULT_EVALS * one_eval / (DEFAULT_EVALS * one_eval + DEFAULT_RUN_STEPS * s_step)
    return {
        "method": method, "steps": cfg.max_steps, "measured_steps": measured, "s_step": s_step,
        "tokens_step": tok_step, "tokens_s": tok_s, "mfu": 6 * params * tok_s / peak,
        "gen_tokens_s": timer.gen_tokens / timer.gen_s if timer.gen_s else None,
        "share_generation": gen_share,
        "share_rest": max(0.0, 1 - gen_share), "one_eval_s": one_eval, "default_run_eval_share": default_eval,
        "loop_s": loop_s, "run_s": run_s,
    }


def machine(on_gpu: bool) -> str:
    gpu = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)" \
        if on_gpu else "no GPU (CPU)"
    return (f"{platform.node()}, {gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")


def table(rows: list[dict]) -> list[str]:
    lines = ["| method | s/step | training tokens/step | training tokens/s | MFU | generation tokens/s | "
             "generation share | rest share | 1 eval s | eval share of a default run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gen = f"{r['gen_tokens_s']:,.0f}" if r["gen_tokens_s"] else "-"
        lines.append(f"| {r['method']} | {r['s_step']:.3f} | {r['tokens_step']:,.0f} | {r['tokens_s']:,.0f} | "
                     f"{100 * r['mfu']:.1f}% | {gen} | {100 * r['share_generation']:.0f}% | "
                     f"{100 * r['share_rest']:.0f}% | {r['one_eval_s']:.2f} | {100 * r['default_run_eval_share']:.1f}% |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny on the CPU, a few steps: checks the bench runs")
    ap.add_argument("--methods", default="sft,dpo,grpo,ppo")
    ap.add_argument("--write", action="store_true", help="append to bench/RESULTS.md (always on a GPU run)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.smoke
    work = Path(tempfile.mkdtemp(prefix="ptlab-gpu-bench-"))
    if args.smoke:
        model, described, runs = "tiny", "tiny (smoke test)", SMOKE_RUNS
        device = {"device": "cpu"}
    else:
        model, described = demo_model(models.cache_dir() / "models" / "demo-shaped")
        runs, device = GPU_RUNS, {}
    folder = models.resolve(model)
    params = sizing.model_shape(folder=folder).params
    peak = matmul_peak(on_gpu, 3.0 if on_gpu else 1.0)
    print(f"{machine(on_gpu)}; {described}, {params / 1e6:.1f}M parameters; matmul peak "
          f"{peak / 1e12:.2f} TFLOP/s ({'bf16' if on_gpu else 'fp32'})", flush=True)
    rows = []
    for method in args.methods.split(","):
        t = time.perf_counter()
        rows.append(bench_method(method, {**runs[method], **device}, model, work, peak, params))
        print(f"{method}: {json.dumps(rows[-1])} ({time.perf_counter() - t:.0f} s)", flush=True)
    text = "\n".join([
        f"\n## GPU benchmark (issue 18){' — smoke test on the CPU' if args.smoke else ''}",
        "",
        f"{machine(on_gpu)}. Model: {described}, {params / 1e6:.1f}M parameters, full fine-tuning, "
        f"{'bf16' if on_gpu else 'fp32'}. Matmul peak {peak / 1e12:.2f} TFLOP/s. "
        f"`.venv/bin/python bench/gpu.py{' --smoke' if args.smoke else ''}`. Settings: "
        + "; ".join(f"{m} {json.dumps(runs[m])}" for m in args.methods.split(",")),
        "",
        *table(rows),
        "",
        "MFU counts the training passes only (6 x parameters x training tokens/s). Goals: SFT >= 20% MFU, GRPO "
        "generation >= 20,000 tokens/s, evaluation < 10% of a default run.",
    ])
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(on_gpu), "model": described, "peak": peak,
                                               "rows": rows}, indent=2))
    if on_gpu or args.write:
        with open(Path(__file__).parent / "RESULTS.md", "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
