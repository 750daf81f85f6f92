"""The uniform evaluation with and without the reference's prompt KV kept across evaluations (issue 18).

    OMP_NUM_THREADS=1 .venv/bin/python bench/eval_prompt_kv.py [--model tiny|demo|demo-shaped] [--evals 3] [--write]

Runs the same Evaluator settings (the config defaults: 16 prompts x 4 samples x 16 new tokens, arithmetic task)
twice on the same policy/reference pair (the reference perturbed a little, so KL is not 0): once with
`reuse_prompt_kv=False` (a full reference forward over prompt + completion, as before) and once with it on.
Reports the seconds per evaluation (the first, which builds the KV, apart from the later ones), the reference
pass's seconds, and the largest |eval/kl| difference. `demo-shaped` is a randomly initialised Llama of
SmolLM2-135M's shape (30 layers, 576 wide, vocab 49152) with tiny's tokenizer: demo's compute without its
weights, for machines where `make demo-model` has not been run.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training import evaluation, models  # noqa: E402
from training.evaluation import EvalSettings, Evaluator  # noqa: E402
from training.tasks import get_task  # noqa: E402


def load(name: str, device):
    if name == "demo-shaped":
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = models.load_tokenizer("tiny")
        config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                             num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048,
                             tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             bos_token_id=tok.bos_token_id)
        torch.manual_seed(0)
        return LlamaForCausalLM(config).to(device).eval(), tok
    return models.load_model(name, device).eval(), models.load_tokenizer(name)


def perturbed(model, scale=0.01):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in other.parameters():
            p.add_((torch.randn(p.shape, generator=gen) * scale).to(p.device, p.dtype))
    return other


def timed(ev: Evaluator, policy, evals: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds per evaluation, seconds in the reference pass per evaluation, eval/kl per evaluation."""
    ref_seconds = []
    real_full, real_cached = evaluation.sequence_logprobs, evaluation.ReferencePrompts.logprobs

    def full(*a, **k):
        t = time.perf_counter()
        out = real_full(*a, **k)
        ref_seconds[-1] += time.perf_counter() - t
        return out

    def cached(self, *a, **k):
        t = time.perf_counter()
        out = real_cached(self, *a, **k)
        ref_seconds[-1] += time.perf_counter() - t
        return out

    evaluation.sequence_logprobs, evaluation.ReferencePrompts.logprobs = full, cached
    try:
        seconds, kls = [], []
        for _ in range(evals):
            ref_seconds.append(0.0)
            t = time.perf_counter()
            metrics, _ = ev(policy, 1)
            seconds.append(time.perf_counter() - t)
            kls.append(metrics["eval/kl"])
    finally:
        evaluation.sequence_logprobs, evaluation.ReferencePrompts.logprobs = real_full, real_cached
    return seconds, ref_seconds, kls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--evals", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    device = models.pick_device("auto")
    policy, tok = load(args.model, device)
    reference = perturbed(policy)
    task = get_task("arithmetic")
    rows = []
    results = {}
    for reuse in (False, True):
        ev = Evaluator(task, tok, reference, EvalSettings(reuse_prompt_kv=reuse), device)
        results[reuse] = timed(ev, policy, args.evals)
    prompt_len = statistics.mean(len(e) for e in Evaluator(task, tok, reference, EvalSettings(), device).encoded)
    for reuse, (sec, ref, _kls) in results.items():
        later = sec[1:] or sec
        later_ref = ref[1:] or ref
        rows.append(f"| {'kept prompt KV' if reuse else 'full reference forward'} | {sec[0]:.2f} | "
                    f"{statistics.median(later):.2f} | {ref[0]:.3f} | {statistics.median(later_ref):.3f} |")
    kl_diff = max(abs(a - b) for a, b in zip(results[False][2], results[True][2], strict=True))
    base, new = statistics.median(results[False][0][1:]), statistics.median(results[True][0][1:])
    text = "\n".join([
        f"\n### Evaluation with the reference's prompt KV kept (issue 18): `{args.model}` on {device.type}",
        "",
        f"{datetime.date.today()}, {platform.node()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Defaults: 16 prompts x 4 samples x 16 new "
        f"tokens (prompts {prompt_len:.0f} tokens on average), {args.evals} evaluations each; "
        f"`OMP_NUM_THREADS=1 .venv/bin/python bench/eval_prompt_kv.py --model {args.model}`.",
        "",
        "| reference pass | 1st eval s | later evals s (median) | reference s, 1st | reference s, later |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Later evaluations: {base:.2f} s -> {new:.2f} s ({100 * (base - new) / base:.0f}% less); "
        f"largest |eval/kl| difference {kl_diff:.2e} nats.",
    ])
    print(text)
    if args.write:
        with open(Path(__file__).parent / "RESULTS.md", "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
