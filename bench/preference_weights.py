"""Do row weights steer training (issue 21)? Split votes as the "weight" disagreement policy writes them: every
prompt has two rows, A over B with weight 0.75 and B over A with weight 0.25 (three raters of four prefer A).
Unweighted, the two rows cancel: nothing says A is better. Weighted, A should win.

    PYTHONPATH=. .venv/bin/python bench/preference_weights.py [--steps 60] [--seeds 0 1 2]

Reward model and DPO on `tiny` (CPU), batch 8, lr 1e-3 (reward) / 5e-4 (DPO, beta 0.1). Measured on the
training prompts: the share where A beats B (reward model: score; DPO: the implicit reward, log-ratio against
the reference) and the mean margin.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import datasets
import torch
import transformers

from training.callbacks import RunHooks
from training.config import from_dict
from training.methods import dpo, reward
from training.methods.common import MethodContext
from training.models import load_model, load_tokenizer
from training.rewards.models import score_pairs
from training.tasks import DatasetTask
from training.tasks.base import assistant, user

CPU = torch.device("cpu")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()


class NullSink:
    def log_metrics(self, step, metrics): ...
    def log_samples(self, step, samples): ...
    def progress(self, progress): ...
    def should_stop(self): return False
    def truncate_after(self, step): ...


def rows(weighted: bool) -> list[dict]:
    out = []
    for a in range(40):
        good, bad = f"{2 * a}", f"{2 * a + 1} maybe"
        prompt = f"What is {a} plus {a}?"
        out += [{"prompt": prompt, "chosen": good, "rejected": bad, "weight": 0.75 if weighted else 1.0},
                {"prompt": prompt, "chosen": bad, "rejected": good, "weight": 0.25 if weighted else 1.0}]
    return out


def seq_logp(model, tok, prompt, answer) -> float:
    p = tok.apply_chat_template(user(prompt), tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(user(prompt) + assistant(answer), tokenize=False)
    ids = tok(full, return_tensors="pt", add_special_tokens=False)["input_ids"]
    n = len(tok(p, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    return logp[torch.arange(n - 1, ids.shape[1] - 1), ids[0, n:]].sum().item()


def measure(method: str, weighted: bool, seed: int, steps: int, tmp: Path) -> tuple[float, float]:
    path = tmp / f"{method}-{weighted}-{seed}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(weighted)))
    task = DatasetTask({"path": str(path), "mapping": {}, "eval_fraction": 0.01})
    settings = {"learning_rate": 1e-3} if method == "reward" else {"learning_rate": 5e-4, "beta": 0.1}
    cfg = from_dict({"method": method, "max_steps": steps, "batch_size": 8, "seed": seed, **settings})
    tok = load_tokenizer("tiny")
    torch.manual_seed(seed)
    if method == "reward":
        from transformers import AutoModelForSequenceClassification

        from training.models import build_tiny

        model = AutoModelForSequenceClassification.from_pretrained(str(build_tiny()), num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        ref = None
    else:
        ref = load_model("tiny", CPU)
        model = copy.deepcopy(ref)
    hooks = RunHooks(NullSink(), total=steps, eval_every=10**6, evaluate=lambda step, model: None)
    ctx = MethodContext(cfg=cfg, task=task, tokenizer=tok, model=model, reference=ref, device=CPU,
                        out_dir=tmp / f"out-{method}-{weighted}-{seed}", hooks=hooks)
    model = (reward if method == "reward" else dpo).train(ctx).model.eval()
    prompts = sorted({r["prompt"] for r in rows(True)})
    by_prompt = {r["prompt"]: (r["chosen"], r["rejected"]) for r in rows(True)[::2]}
    goods, bads = [by_prompt[p][0] for p in prompts], [by_prompt[p][1] for p in prompts]
    if method == "reward":
        chats = [user(p) for p in prompts]
        margins = [g - b for g, b in zip(score_pairs(model, tok, chats, goods, CPU),
                                         score_pairs(model, tok, chats, bads, CPU), strict=True)]
    else:
        margins = [cfg.beta * ((seq_logp(model, tok, p, g) - seq_logp(ref, tok, p, g))
                               - (seq_logp(model, tok, p, b) - seq_logp(ref, tok, p, b)))
                   for p, g, b in zip(prompts, goods, bads, strict=True)]
    return sum(m > 0 for m in margins) / len(margins), sum(margins) / len(margins)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("| method | rows | seed | A beats B | mean margin |\n|---|---|---|---|---|")
        for method in ("reward", "dpo"):
            for weighted in (False, True):
                for seed in args.seeds:
                    share, margin = measure(method, weighted, seed, args.steps, Path(tmp))
                    label = "weighted 0.75 / 0.25" if weighted else "unweighted (1 / 1)"
                    print(f"| {method} | {label} | {seed} | {share:.2f} | {margin:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
