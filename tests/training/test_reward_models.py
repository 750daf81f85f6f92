"""Model-based signals on the tiny model: the mechanics (batching, padding, position swap, label tokens)."""

import pytest
import torch

from training.rewards import SignalEnv, SignalError, build

CPU = torch.device("cpu")
PROMPTS = ["What is 2+2?", "Name a colour.", "Say hi in a long and winding way, please."]
COMPLETIONS = ["4", "Blue, I think, or maybe a light shade of green.", "hi"]
REFS = ["4", "Red", "Hello!"]


def ready(spec, tiny_path):
    signal = build(spec)
    signal.setup(SignalEnv(device=CPU))
    return signal


def test_pointwise_judge_is_the_expected_score_over_score_tokens(tiny_path):
    judge = ready({"kind": "judge", "model": str(tiny_path), "batch_size": 2, "answer_prefix": "Score: "}, tiny_path)
    got = judge(COMPLETIONS, prompts=PROMPTS, reference=REFS)
    assert len(got) == 3 and all(0.0 <= v <= 1.0 for v in got)
    # one prompt at a time (no padding) gives the same numbers as left-padded batches
    alone = [judge([c], prompts=[p], reference=[r])[0] for p, c, r in zip(PROMPTS, COMPLETIONS, REFS, strict=True)]
    assert got == pytest.approx(alone, abs=1e-5)
    # by hand: softmax over the five digit tokens' logits, expected value of (0, .25, .5, .75, 1)
    text = judge.render({"prompt": PROMPTS[0], "completion": COMPLETIONS[0], "reference": REFS[0]})
    ids = judge._tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    logits = judge._lm(input_ids=ids).logits[0, -1]
    digits = [judge._tok.encode(s, add_special_tokens=False)[0] for s in "12345"]
    p = torch.softmax(logits[digits].float(), dim=0)
    assert got[0] == pytest.approx((p * torch.linspace(0, 1, 5)).sum().item(), abs=1e-5)


def test_pairwise_judge_swaps_positions(tiny_path):
    judge = ready({"kind": "pairwise_judge", "model": str(tiny_path)}, tiny_path)
    # a completion identical to the reference: P(first) + P(second) over the two orders is exactly one
    same = judge(REFS, prompts=PROMPTS, reference=REFS)
    assert same == pytest.approx([0.5] * 3, abs=1e-6)
    got = judge(COMPLETIONS, prompts=PROMPTS, reference=REFS)
    assert all(0.0 < v < 1.0 for v in got)
    # swapping the roles of completion and reference mirrors the score
    mirrored = judge(REFS, prompts=PROMPTS, reference=COMPLETIONS)
    assert [a + b for a, b in zip(got, mirrored, strict=True)] == pytest.approx([1.0] * 3, abs=1e-5)


def test_judge_labels_must_be_single_tokens(tiny_path):
    with pytest.raises(SignalError, match="must be exactly one token"):
        ready({"kind": "judge", "model": str(tiny_path), "scores": ["bad", "good"]}, tiny_path)


def test_templates_are_filled_without_str_format(tiny_path):
    judge = ready({"kind": "judge", "model": str(tiny_path),
                   "template": 'JSON {"x": 1} {completion} {prompt.__class__}'}, tiny_path)
    text = judge.render({"prompt": "p", "completion": "c", "reference": ""})
    assert 'JSON {"x": 1} c {prompt.__class__}' in text


def test_reward_model_signal_scores_in_batches(tiny_path, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from training.models import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_path), num_labels=1)
    model.config.pad_token_id = load_tokenizer(str(tiny_path)).pad_token_id
    model.save_pretrained(tmp_path / "rm")
    load_tokenizer(str(tiny_path)).save_pretrained(tmp_path / "rm")
    rm = ready({"kind": "reward_model", "path": str(tmp_path / "rm"), "batch_size": 2}, tiny_path)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    got = rm(COMPLETIONS, prompts=prompts)
    assert len(got) == 3 and len(set(got)) == 3
    assert rm(COMPLETIONS[:1], prompts=prompts[:1]) == pytest.approx(got[:1], abs=1e-4)
