"""Reward signals' cost (issue 15): each verifier per 1,000 completions, a local judge's pairs per second
(pointwise and pairwise, on `tiny` and on `demo` when it is cached), and a reward model's scoring rate.

    PYTHONPATH=. .venv/bin/python bench/signals.py [--judge-model demo] [--n 1000]

Completions are word-problem answers (~40 words, the working and '#### n') from the `word_problems` task,
so the numbers are for realistic lengths. Verifiers: median of 5 repeats over the same 1,000 completions,
wall and process CPU. Models run on the CPU with the process's torch threads (OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from training.rewards import SignalEnv, build
from training.tasks import get_task

VERIFIERS = [
    "exact_match", "numeric_match", "regex_match", {"kind": "format", "pattern": r"(?s).*#### -?\d+"}, "length",
    "valid_json", "multiple_choice", "token_f1", "sentiment",
    {"kind": "weighted_sum", "signals": ["numeric_match", {"kind": "format", "pattern": r"(?s).*#### -?\d+"}],
     "weights": [0.8, 0.2]},
]


def data(n: int):
    examples = get_task("word_problems").examples()
    ex = [examples[i % len(examples)] for i in range(n)]
    completions = [e.reference if i % 2 else e.rejected for i, e in enumerate(ex)]
    columns = {"answer": [e.columns["answer"] for e in ex], "reference": [e.reference for e in ex]}
    prompts = [[{"role": "user", "content": e.prompt}] for e in ex]
    return completions, columns, prompts


def timed(fn, repeats: int):
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def bench_verifiers(n: int) -> None:
    completions, columns, _ = data(n)
    print(f"verifiers, {n} completions (mean {sum(len(c.split()) for c in completions) / n:.0f} words):")
    print("| signal | ms per 1,000 (wall) | ms per 1,000 (CPU) |")
    print("|---|---|---|")
    for spec in VERIFIERS:
        signal = build(spec)
        signal(completions[:10], **{k: v[:10] for k, v in columns.items()})  # warm-up (VADER's lexicon load)
        wall, cpu = timed(lambda s=signal: s(completions, **columns), 5)
        name = spec if isinstance(spec, str) else spec["kind"]
        print(f"| {name} | {wall * 1000 * 1000 / n:.1f} | {cpu * 1000 * 1000 / n:.1f} |")


def bench_models(model: str, n: int, batch: int) -> None:
    completions, columns, prompts = data(n)
    env = SignalEnv(device=torch.device("cpu"))
    for spec in ({"kind": "judge", "model": model, "batch_size": batch, "answer_prefix": "Score: "},
                 {"kind": "pairwise_judge", "model": model, "batch_size": batch}):
        judge = build(spec)
        t = time.perf_counter()
        judge.setup(env)
        load = time.perf_counter() - t
        judge(completions[:batch], prompts=prompts[:batch], **{k: v[:batch] for k, v in columns.items()})  # warm
        wall, _ = timed(lambda j=judge: j(completions, prompts=prompts, **columns), 1)
        forwards = 2 if spec["kind"] == "pairwise_judge" else 1
        print(f"{spec['kind']} on {model}: {n / wall:.1f} completions/s ({n * forwards / wall:.1f} judge prompts/s, "
              f"batch {batch}, load {load:.1f} s)")


def bench_reward_model(model: str, n: int, batch: int, folder) -> None:
    from transformers import AutoModelForSequenceClassification

    from training.models import load_tokenizer, resolve

    completions, _, prompts = data(n)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(resolve(model), num_labels=1)
    tok = load_tokenizer(model)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(folder)
    tok.save_pretrained(folder)
    signal = build({"kind": "reward_model", "path": str(folder), "batch_size": batch})
    signal.setup(SignalEnv(device=torch.device("cpu")))
    signal(completions[:batch], prompts=prompts[:batch])
    wall, _ = timed(lambda: signal(completions, prompts=prompts), 1)
    print(f"reward_model from {model} (random head): {n / wall:.1f} conversations/s (batch {batch})")


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000, help="completions for the verifiers")
    p.add_argument("--judge-model", action="append", default=None, help="tiny (default), demo, a folder")
    p.add_argument("--model-n", type=int, default=64, help="completions for the judges and reward model")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    bench_verifiers(args.n)
    for model in args.judge_model or ["tiny"]:
        bench_models(model, args.model_n, args.batch)
        with tempfile.TemporaryDirectory() as tmp:
            bench_reward_model(model, args.model_n, args.batch, tmp)


if __name__ == "__main__":
    main()
