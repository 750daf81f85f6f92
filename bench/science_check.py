"""Science check: on `arithmetic` with `tiny`, SFT first, then DPO, GRPO, RLOO and PPO each from the SFT
model. Each RL method should raise eval/reward above where it starts while eval/kl grows from 0.

    .venv/bin/python bench/science_check.py --out var/science [--sft-steps 300 --rl-steps 100]

Prints a Markdown table for bench/RESULTS.md; every run's files stay under --out."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training.callbacks import FileSink
from training.config import from_dict
from training.runner import run


def series(folder: Path, name: str) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[name]) for r in rows if name in r]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="var/science")
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--rl-steps", type=int, default=100)
    p.add_argument("--methods", default="dpo,grpo,rloo,ppo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-samples", type=int, default=8, help="completions per eval prompt (more: less noise)")
    p.add_argument("--sft-dir", default="", help="reuse this finished SFT run folder instead of training SFT")
    args = p.parse_args()
    out = Path(args.out)
    common = {"task": "arithmetic", "seed": args.seed, "eval_prompts": 20, "eval_samples": args.eval_samples, "max_new_tokens": 8}
    rows = []

    def go(name: str, cfg: dict) -> Path:
        folder = out / name
        t0 = time.monotonic()
        run(from_dict({**common, **cfg}), FileSink(folder), folder, resume=False)
        rew, kl = series(folder, "eval/reward"), series(folder, "eval/kl")
        rows.append((name, cfg["max_steps"], rew[0][1], rew[-1][1], max(v for _, v in rew), kl[0][1], kl[-1][1],
                     time.monotonic() - t0))
        return folder

    sft = Path(args.sft_dir) if args.sft_dir else go("sft", {"method": "sft", "model": "tiny", "max_steps": args.sft_steps, "eval_every": 50,
                     "learning_rate": 1e-3, "batch_size": 16})
    start = str(sft / "model")
    rl = {"model": start, "max_steps": args.rl_steps, "eval_every": 20}
    configs = {
        "dpo": {"method": "dpo", "learning_rate": 5e-5, "beta": 0.1, "batch_size": 16, "sft_weight": 1.0},
        "grpo": {"method": "grpo", "learning_rate": 1e-4, "beta": 0.02, "batch_size": 32, "num_generations": 4},
        "rloo": {"method": "rloo", "learning_rate": 1e-4, "beta": 0.02, "batch_size": 32, "num_generations": 4},
        "ppo": {"method": "ppo", "learning_rate": 1e-4, "kl_coef": 0.02, "batch_size": 16, "num_minibatches": 2},
    }
    for m in args.methods.split(","):
        go(m, {**rl, **configs[m]})

    print("| run | steps | eval/reward start | end | best | eval/kl start | end | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.3f} | {r[7]:.0f} |")


if __name__ == "__main__":
    main()
