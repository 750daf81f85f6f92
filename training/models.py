"""Loading models: `tiny` (built here), `demo` (SmolLM2 from a PyPI wheel), local folders, hub ids.

Built models are cached under PTLAB_CACHE (default ~/.cache/ptlab) and written atomically,
so concurrent workers never see half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SEED = 0  # every run shares the same tiny base model: fairness needs one starting point


class ModelLoadError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("PTLAB_CACHE", Path.home() / ".cache" / "ptlab"))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was requested but no GPU is visible")
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


def train_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve(name: str) -> str:
    """Turn a model name from a config into something `from_pretrained` takes."""
    if name == "tiny":
        return str(build_tiny())
    if name == "demo":
        from training.demo_model import prepare_demo

        return str(prepare_demo(cache_dir() / "models"))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model folder {path} has no config.json")
        return str(path)
    if name.startswith(("/", ".", "~")):
        raise ModelLoadError(f"model folder {name} does not exist")
    return name  # a hub id


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolve(name_or_path))
    except OSError as e:
        raise ModelLoadError(_hub_message(name_or_path, e)) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "left"  # generation needs left padding; TRL sets its own where it differs
    return tok


def load_model(name_or_path: str, device: torch.device, *, cls=None, dtype: torch.dtype | None = None, **kwargs):
    """Load a causal LM (or `cls`) onto `device`, in `dtype` (default: bf16 on GPUs that support it)."""
    from transformers import AutoModelForCausalLM

    cls = cls or AutoModelForCausalLM
    try:
        model = cls.from_pretrained(resolve(name_or_path), dtype=dtype or train_dtype(device), **kwargs)
    except OSError as e:
        raise ModelLoadError(_hub_message(name_or_path, e)) from e
    return model.to(device)


def add_lora(model, r: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def _hub_message(name: str, err: Exception) -> str:
    return (f"could not load model {name!r}: it is not 'tiny', 'demo' or an existing folder, and loading it "
            f"as a hub id failed (no network to the model hub?): {err}")


# --- the tiny model -------------------------------------------------------------------------------

def build_tiny() -> Path:
    """A ~1.7M-parameter Llama with a byte-level BPE tokenizer and a ChatML template, built
    deterministically in a few seconds and cached."""
    target = cache_dir() / "models" / f"tiny-v1-seed{TINY_SEED}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tiny-"))
    try:
        tok = _tiny_tokenizer()
        tok.save_pretrained(tmp)
        _tiny_model(tok).save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tiny_corpus() -> list[str]:
    from training.tasks import BUILTIN_TASKS

    texts = []
    for task in BUILTIN_TASKS.values():
        for row in task.sft_rows():
            texts.append(row["prompt"][-1]["content"] + " " + row["completion"][-1]["content"])
    return texts


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=768, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = _tiny_corpus() + ["user", "assistant", "system", "\n"]
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token=None)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _tiny_model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None)
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model
