"""The uniform evaluation's KL estimator, masks and sampling, on `tiny` (no runner, no trainer)."""

import copy

import pytest
import torch

from training import models
from training.evaluation import EvalSettings, Evaluator, completion_mask, sequence_logprobs
from training.tasks import get_task

CPU = torch.device("cpu")
SETTINGS = EvalSettings(prompts=4, samples=3, max_new_tokens=12, batch_size=5)  # 12 sequences in 3 batches


@pytest.fixture(scope="module")
def tok(tiny_path):
    return models.load_tokenizer("tiny")


@pytest.fixture(scope="module")
def policy(tiny_path):
    return models.load_model("tiny", CPU)


def perturbed(model, scale=0.05):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return other


def evaluator(tok, reference):
    return Evaluator(get_task("arithmetic"), tok, reference, SETTINGS, CPU)


def two_forward_kl(ev: Evaluator, policy, reference) -> torch.Tensor:
    """The estimator written out the slow way: the same sampling (same seed, same batches), then a full
    forward of each model over prompt + completion."""
    pad, eos = ev.tok.pad_token_id, ev.tok.eos_token_id
    kls = []
    torch.manual_seed(ev.s.seed)
    for seqs in ev._chunks():
        width = max(map(len, seqs))
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                              top_p=1.0, max_new_tokens=ev.s.max_new_tokens, eos_token_id=eos, pad_token_id=pad)
        comp_mask = completion_mask(out[:, width:], eos)
        full = torch.cat([mask, comp_mask], dim=1)
        diff = sequence_logprobs(policy, out, full, width) - sequence_logprobs(reference, out, full, width)
        kls.append((diff * comp_mask).sum(dim=1))
    return torch.cat(kls)


def test_kl_of_the_unchanged_policy_is_zero_to_rounding_and_exactly_zero_when_declared(tok, policy):
    ev = evaluator(tok, copy.deepcopy(policy))
    estimated, samples = ev(policy, 0)
    declared, declared_samples = ev(policy, 0, is_reference=True)
    assert abs(estimated["eval/kl"]) < 1e-4  # sampling pass vs full forward: float rounding only
    assert declared["eval/kl"] == 0.0 and declared["eval/kl_stderr"] == 0.0
    # the shortcut changes the KL alone: same samples, rewards and lengths
    assert [s.completion for s in samples] == [s.completion for s in declared_samples]
    assert estimated["eval/reward"] == declared["eval/reward"]
    assert estimated["eval/length"] == declared["eval/length"]


def test_kl_against_another_reference_matches_two_full_forwards(tok, policy):
    reference = perturbed(policy)
    ev = evaluator(tok, reference)
    metrics, _ = ev(policy, 5)
    slow = two_forward_kl(ev, policy, reference)
    assert metrics["eval/kl"] > 0.01
    assert metrics["eval/kl"] == pytest.approx(slow.double().mean().item(), abs=1e-4)
    assert metrics["eval/kl_stderr"] == pytest.approx(slow.double().std().item() / len(slow) ** 0.5, abs=1e-4)


def test_same_seed_gives_the_same_samples_at_every_evaluation_and_leaves_training_rng_alone(tok, policy):
    ev = evaluator(tok, copy.deepcopy(policy))
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    _, first = ev(policy, 0)
    after = torch.rand(1)
    _, second = ev(policy, 20)
    assert [s.completion for s in first] == [s.completion for s in second]
    assert torch.equal(before, after)  # the evaluation's sampling does not move the training RNG
    assert len(first) == SETTINGS.prompts * SETTINGS.samples
    assert [(s.prompt_id, s.index) for s in first] == [(i // 3, i % 3) for i in range(12)]


def test_left_padding_does_not_change_log_probs(policy):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    plain = sequence_logprobs(policy, ids, torch.ones_like(ids), 3)
    padded_ids = torch.tensor([[0, 0, 5, 6, 7, 8, 9, 10]])
    padded = sequence_logprobs(policy, padded_ids, torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]]), 5)
    assert torch.allclose(plain, padded, atol=1e-5)


def test_completion_mask_keeps_tokens_up_to_and_including_the_first_eos():
    eos = 2
    completion = torch.tensor([[4, 5, 2, 7, 2], [2, 3, 3, 3, 3], [4, 4, 4, 4, 4]])
    assert completion_mask(completion, eos).tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_entropy_is_the_mean_per_token_entropy_of_the_sampling_distribution(tok, policy):
    """eval/entropy against a full forward over the sampled completions (the same seed and batches)."""
    ev = evaluator(tok, copy.deepcopy(policy))
    metrics, _ = ev(policy, 0, is_reference=True)
    pad, eos = ev.tok.pad_token_id, ev.tok.eos_token_id
    total, tokens = 0.0, 0
    torch.manual_seed(ev.s.seed)
    for seqs in ev._chunks():
        width = max(map(len, seqs))
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                              top_p=1.0, max_new_tokens=ev.s.max_new_tokens, eos_token_id=eos, pad_token_id=pad)
        comp_mask = completion_mask(out[:, width:], eos)
        full = torch.cat([mask, comp_mask], dim=1)
        logits = policy(input_ids=out, attention_mask=full, position_ids=(full.cumsum(1) - 1).clamp(min=0)).logits
        logp = torch.log_softmax(logits[:, width - 1:-1].float(), dim=-1)
        total += float((-(logp.exp() * logp).sum(-1) * comp_mask).sum())
        tokens += int(comp_mask.sum())
    assert metrics["eval/entropy"] > 0.1
    assert metrics["eval/entropy"] == pytest.approx(total / tokens, rel=1e-3)
