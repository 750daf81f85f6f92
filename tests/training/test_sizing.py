"""The memory estimate of a run before it is queued (training/sizing.py): parameter counts against real models,
what each setting changes, and the refusal with its suggestions."""

from __future__ import annotations

import dataclasses

import pytest

from training import sizing
from training.config import from_dict

GIB = 2**30
LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False}


def cfg(method="sft", **kw):
    return from_dict({"method": method, "model": "demo", **kw})


def test_parameter_counts_match_the_models():
    assert sizing.model_shape(name="demo").params == 134_515_008  # SmolLM2-135M-Instruct
    assert sizing.model_shape(LLAMA_7B).params == 6_738_415_616  # Llama-2-7B
    assert sizing.model_shape({"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}).params == \
        pytest.approx(124_439_808, rel=0.01)  # GPT-2 small (biases and positions left out)
    assert sizing.model_shape(name="no-such-model") is None and sizing.model_shape({"hidden": 1}) is None


def test_tiny_and_its_lora_adapters_counted_exactly(tiny_path):
    import torch

    from training.models import add_lora, load_model

    shape = sizing.model_shape(folder=tiny_path)
    model = load_model("tiny", torch.device("cpu"))
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora = add_lora(model, r=4, alpha=8)
    assert shape.lora_params(4) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_full_fine_tuning_counts_weights_reference_gradients_and_adam():
    shape = sizing.model_shape(LLAMA_7B)
    e = sizing.estimate(cfg(), shape)
    p = shape.params
    assert (e.weights, e.reference, e.gradients, e.optimizer) == (2 * p, 2 * p, 2 * p, 4 * p)
    assert e.generation == 0 and e.activations > 0
    assert sizing.estimate(cfg(precision="fp32", device="cuda"), shape).weights == 4 * p


def test_each_setting_moves_the_estimate_the_right_way():
    shape = sizing.model_shape(LLAMA_7B)
    base = sizing.estimate(cfg(batch_size=16), shape)
    lora = sizing.estimate(cfg(batch_size=16, lora=True), shape)
    assert lora.reference == 0 and lora.gradients < base.gradients / 100 and lora.total < base.total / 2
    checkpointed = sizing.estimate(cfg(batch_size=16, gradient_checkpointing=True), shape)
    assert checkpointed.activations < base.activations / 4
    accumulated = sizing.estimate(cfg(batch_size=16, gradient_accumulation_steps=4), shape)
    assert accumulated.activations == pytest.approx(base.activations / 4)
    longer = sizing.estimate(cfg(batch_size=16, max_prompt_length=1024, max_completion_length=1024), shape)
    assert longer.activations > 10 * base.activations
    grpo = sizing.estimate(cfg("grpo", batch_size=16, generation_steps=4), shape)
    assert grpo.generation == 4 * sizing.estimate(cfg("grpo", batch_size=16), shape).generation > 0
    ddp = sizing.estimate(cfg(batch_size=16, num_processes=2), shape)
    assert ddp.weights == base.weights and ddp.activations == pytest.approx(base.activations / 2)


def test_a_run_that_fits_is_let_through():
    v = sizing.check(cfg(), sizing.model_shape(name="demo"), [("NVIDIA H100 80GB HBM3", 81559, 1)])
    assert v.fits and v.message == ""
    assert sizing.check(cfg(), None, [("x", 1, 1)]).fits  # unknown shape: not checked
    assert sizing.check(cfg(), sizing.model_shape(LLAMA_7B), []).fits  # no GPU worker on the queue: not checked


def test_a_run_too_big_is_refused_with_what_would_fit():
    v = sizing.check(cfg(batch_size=16), sizing.model_shape(LLAMA_7B), [("NVIDIA A100-SXM4-40GB", 40960, 1)])
    assert not v.fits
    assert "more than the 40.0 GiB of the largest GPU (NVIDIA A100-SXM4-40GB)" in v.message
    assert v.suggestions and v.suggestions[0].startswith("LoRA (lora on): ")
    assert "it would fit with LoRA" in v.message


def test_activations_alone_suggest_checkpointing_or_accumulation():
    long = cfg(batch_size=32, max_prompt_length=2048, max_completion_length=2048)
    v = sizing.check(long, sizing.model_shape(name="demo"), [("NVIDIA H100 80GB HBM3", 81559, 1)])
    assert not v.fits
    assert any(s.startswith("gradient checkpointing") for s in v.suggestions)
    assert any(s.startswith("gradient_accumulation_steps") for s in v.suggestions)


def test_more_processes_than_gpus_is_refused():
    v = sizing.check(cfg(batch_size=8, num_processes=4), sizing.model_shape(name="demo"),
                     [("NVIDIA H100", 81559, 2), ("NVIDIA H100", 81559, 1)])
    assert not v.fits and "at most 2 GPUs" in v.message and v.suggestions == ["num_processes 2 or fewer"]


def test_the_estimate_reads_as_text():
    e = sizing.estimate(cfg(), sizing.model_shape(name="demo"))
    assert e.text().startswith(f"about {e.total / GIB:.1f} GiB per GPU (weights 0.3 GiB, reference 0.3 GiB")
    assert dataclasses.asdict(e).keys() == {"weights", "reference", "gradients", "optimizer", "activations",
                                            "generation"}
