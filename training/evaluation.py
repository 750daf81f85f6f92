"""The uniform evaluation: the same prompts, sampling, gold reward and KL estimator for every method.

KL(policy || reference) is estimated per sequence by Monte Carlo on completions sampled from the
unmodified policy (temperature 1, top_k 0, top_p 1): the sum over completion tokens, up to and
including the first EOS, of log p_policy - log p_ref. The policy's log-probs are the sampling pass's
own logits (temperature 1 leaves them as they are), so only the reference needs a second forward.
Position ids follow the left padding, so a padded prompt scores exactly as an unpadded one.

When the caller knows the policy *is* the reference (step 0 of a run whose reference is its starting
model), the reference pass is skipped and the KL is exactly 0: the cached sampling pass and a full
forward agree only to float rounding (~1e-6 nats), which would otherwise show as a non-zero start.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from training.callbacks import Sample
from training.tasks.base import Task


@dataclass
class EvalSettings:
    prompts: int = 16
    samples: int = 4
    max_new_tokens: int = 16
    seed: int = 1234  # the same sampling noise at every evaluation, so steps differ by the policy alone
    batch_size: int = 64


class Evaluator:
    def __init__(self, task: Task, tokenizer, reference, settings: EvalSettings, device: torch.device,
                 proxy_reward: Callable | None = None, gold_reward: Callable | None = None,
                 monitors: tuple[Callable, ...] = ()):
        """`reference` is a model, or None when the policy is a PEFT model whose base is the reference.
        `gold_reward` replaces the task's own gold reward (eval/reward); `proxy_reward` (the training signal,
        when it differs) is logged as eval/proxy_reward and each monitor as eval/reward/<its __name__>."""
        self.task, self.tok, self.reference, self.s, self.device = task, tokenizer, reference, settings, device
        self.proxy_reward, self.gold, self.monitors = proxy_reward, gold_reward, tuple(monitors)
        examples = task.eval_examples(settings.prompts)
        self.prompts = [ex.prompt for ex in examples]
        self.chats = [ex.chat() for ex in examples]
        self.columns = {k: [ex.columns[k] for ex in examples for _ in range(settings.samples)]
                        for k in (examples[0].columns if examples else {})}
        texts = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
                 for chat in self.chats]
        self.encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    @torch.no_grad()
    def __call__(self, model, step: int, *, is_reference: bool = False) -> tuple[dict[str, float], list[Sample]]:
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.s.seed)
                rows = [self._batch(model, chunk, is_reference) for chunk in self._chunks()]
        finally:
            model.train(was_training)
        completions = [c for r in rows for c in r[0]]
        kls = torch.cat([r[1] for r in rows])
        lengths = torch.cat([r[2] for r in rows]).float()
        entropy = sum(r[3] for r in rows) / max(lengths.sum().item(), 1.0)
        prompts = [chat for chat in self.chats for _ in range(self.s.samples)]
        if self.gold is None:
            rewards, parts = self.task.gold_reward(completions, self.columns)
        else:
            rewards, parts = [float(v) for v in self.gold(completions, prompts=prompts, **self.columns)], {}
        for monitor in self.monitors:
            parts[monitor.__name__] = monitor(completions, prompts=prompts, **self.columns)
        r = torch.tensor(rewards, dtype=torch.float64)
        n = len(rewards)
        metrics = {
            "eval/reward": r.mean().item(),
            "eval/reward_std": r.std(unbiased=True).item() if n > 1 else 0.0,
            "eval/kl": kls.double().mean().item(),
            "eval/kl_stderr": kls.double().std(unbiased=True).item() / math.sqrt(n) if n > 1 else 0.0,
            "eval/length": lengths.mean().item(),
            "eval/entropy": entropy,  # mean per-token entropy of the policy over the completions, nats
            **{f"eval/reward/{name}": sum(v) / n for name, v in parts.items()},
        }
        if self.proxy_reward is not None:
            metrics["eval/proxy_reward"] = sum(self.proxy_reward(completions, prompts=prompts, **self.columns)) / n
        k = self.s.samples
        samples = [Sample(step=step, prompt=self.prompts[i // k], completion=c, reward=rewards[i],
                          index=i % k, prompt_id=i // k) for i, c in enumerate(completions)]
        return metrics, samples

    def _chunks(self):
        seqs = [ids for ids in self.encoded for _ in range(self.s.samples)]
        for i in range(0, len(seqs), self.s.batch_size):
            yield seqs[i:i + self.s.batch_size]

    def _batch(self, model, seqs: list[list[int]], is_reference: bool):
        pad = self.tok.pad_token_id
        eos = self.tok.eos_token_id
        width = max(map(len, seqs))
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, max_new_tokens=self.s.max_new_tokens, eos_token_id=eos,
                             pad_token_id=pad, output_logits=True, return_dict_in_generate=True)
        completion = gen.sequences[:, width:]
        comp_mask = completion_mask(completion, eos)
        if is_reference:
            kl = torch.zeros(len(seqs), device=self.device)
        else:
            logp = token_logprobs(torch.stack(gen.logits, dim=1), completion)  # raw logits: the sampled distribution
            with self._reference_context(model) as ref:
                logp_ref = sequence_logprobs(ref, gen.sequences, torch.cat([mask, comp_mask], dim=1), width)
            kl = ((logp - logp_ref) * comp_mask).sum(dim=1)
        texts = [self.tok.decode(c[m.bool()], skip_special_tokens=True) for c, m in zip(completion, comp_mask, strict=True)]
        return texts, kl.cpu(), comp_mask.sum(dim=1).cpu(), entropy_sum(gen.logits, comp_mask)

    def _reference_context(self, model):
        if self.reference is not None:
            return nullcontext(self.reference)
        return _adapters_off(model)


@contextmanager
def _adapters_off(model):
    with model.disable_adapter():
        yield model


def entropy_sum(logits: tuple[torch.Tensor, ...], mask: torch.Tensor) -> float:
    """The sum over completion tokens (`mask`) of the sampling distribution's entropy, nats; `logits` the
    raw per-position logits of generate() (one (batch, vocab) tensor per position: no (B, T, V) copy)."""
    total = 0.0
    for t, step in enumerate(logits):
        logp = torch.log_softmax(step.float(), dim=-1)
        total += float((-(logp.exp() * logp).sum(dim=-1) * mask[:, t]).sum())
    return total


def completion_mask(completion: torch.Tensor, eos: int) -> torch.Tensor:
    """1 for completion tokens up to and including the first EOS, 0 after it."""
    is_eos = completion == eos
    after_first_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~after_first_eos).long()


def sequence_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """Per-token log-probabilities of ids[:, prompt_width:] (positions respect left padding). The LM head
    runs only where completion tokens are predicted (`logits_to_keep`): most positions are prompt."""
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    keep = ids.shape[1] - prompt_width + 1
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=keep).logits
    return token_logprobs(logits[:, :-1], ids[:, prompt_width:])


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position, without materialising the whole log-softmax."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
