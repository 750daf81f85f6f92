"""How much GPU memory a run needs, estimated before it is queued, from its config and its model's config.json
alone (no torch: the web server asks, and never imports the training stack).

Per process (DDP holds a whole copy of everything on each GPU):
- weights: parameters x bytes (bf16: 2, fp32: 4), and as much again for a reference model when the run loads
  one (the uniform evaluation's, which the trainers share; none for LoRA, whose reference is the base with
  its adapters off);
- gradients and AdamW's two moments: trainable parameters x bytes x 3 (LoRA: the adapters only);
- activations of one micro-batch: tokens x layers x 34 x hidden x bytes / 2 (Korthikanti et al. 2022, with
  fused attention: no seq^2 term); with gradient checkpointing, only each layer's input plus one layer's
  worth; plus the float32 logits and their gradient (tokens x vocab x 8);
- for methods that sample: the KV cache of the generation batch;
- 1.5 GiB for the CUDA context and the allocator's slack, then 10% more.

An estimate (a few tens of percent either way), good for telling 40 GB from 80 GB, and for saying which change
makes a run fit; not for packing a GPU to the last gigabyte.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
OVERHEAD = int(1.5 * GIB)
ASSUMED_PROMPT = 64  # tokens, when max_prompt_length does not bound the prompt
ONLINE = ("grpo", "rloo", "ppo")
# Shapes of the built-in models, for when their files are not on this machine (the web host).
KNOWN = {
    "demo": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True},
}


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    gated: bool = True  # SwiGLU MLP (Llama, Mistral, Qwen, SmolLM): three matrices; GPT-2: two

    @classmethod
    def from_config(cls, c: dict) -> Shape:
        c = c.get("text_config", c)
        hidden = c.get("hidden_size") or c["n_embd"]
        heads = c.get("num_attention_heads") or c["n_head"]
        gpt2 = "n_embd" in c and "hidden_size" not in c
        return cls(hidden=hidden, layers=c.get("num_hidden_layers") or c["n_layer"],
                   intermediate=c.get("intermediate_size") or c.get("n_inner") or 4 * hidden,
                   vocab=c["vocab_size"], heads=heads, kv_heads=c.get("num_key_value_heads") or heads,
                   head_dim=c.get("head_dim") or hidden // heads, tied=c.get("tie_word_embeddings", True),
                   gated=not gpt2)

    @property
    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block (what LoRA's "all-linear" adapts)."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        mlp = [(h, self.intermediate)] * (2 if self.gated else 1) + [(self.intermediate, h)]
        return [(h, q), (h, kv), (h, kv), (q, h), *mlp]

    @property
    def params(self) -> int:
        per_layer = sum(i * o for i, o in self.layer_linears) + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (i + o) for i, o in self.layer_linears)


def model_shape(config_json: dict | None = None, *, folder: str | Path | None = None, name: str = "") -> Shape | None:
    """The shape from a config.json (a dict, or the file in `folder`), a built-in model's name, or None."""
    if config_json is None and folder is not None and (Path(folder) / "config.json").is_file():
        config_json = json.loads((Path(folder) / "config.json").read_text())
    if config_json is None and name in KNOWN:
        config_json = KNOWN[name]
    try:
        return Shape.from_config(config_json) if config_json else None
    except (KeyError, TypeError, ZeroDivisionError):
        return None


@dataclass
class Estimate:
    weights: int
    reference: int
    gradients: int
    optimizer: int
    activations: int
    generation: int

    @property
    def total(self) -> int:
        parts = self.weights + self.reference + self.gradients + self.optimizer + self.activations + self.generation
        return int((parts + OVERHEAD) * 1.1)

    def text(self) -> str:
        parts = (("weights", self.weights), ("reference", self.reference), ("gradients", self.gradients),
                 ("optimizer", self.optimizer), ("activations", self.activations), ("generation", self.generation))
        shown = ", ".join(f"{name} {gib(v)}" for name, v in parts if v)
        return f"about {gib(self.total)} per GPU ({shown}, plus the CUDA context and slack)"


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def estimate(cfg, shape: Shape) -> Estimate:
    """Memory of one process of the run `cfg` (a training.config dataclass) on a GPU."""
    from training import options  # no torch there either

    w = 4 if cfg.precision == "fp32" else 2  # auto is bf16 on the GPUs that train (training.models.train_dtype)
    params = shape.params
    trainable = shape.lora_params(cfg.lora_r) if cfg.lora else params
    reference = 0 if cfg.lora and not cfg.reference_model else params * w
    adapters = trainable * w if cfg.lora else 0
    completion = options.completion_length(cfg)
    seq = (cfg.max_prompt_length or ASSUMED_PROMPT) + completion
    if cfg.method == "dpo":
        seq *= 2  # chosen and rejected
    micro = options.micro_batch(cfg)
    if cfg.method == "ppo":
        micro = max(1, cfg.batch_size // cfg.num_processes // cfg.num_minibatches // cfg.gradient_accumulation_steps)
    tokens = micro * seq
    per_layer = 34 * shape.hidden * w // 2
    if cfg.gradient_checkpointing:
        activations = tokens * (shape.layers * shape.hidden * w + per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    activations += tokens * shape.vocab * 8
    generation = 0
    if cfg.method in ONLINE:
        batch = cfg.batch_size * getattr(cfg, "generation_steps", 1) // cfg.num_processes
        generation = batch * seq * 2 * shape.layers * shape.kv_heads * shape.head_dim * w
    return Estimate(weights=params * w + adapters, reference=reference, gradients=trainable * w,
                    optimizer=2 * trainable * w, activations=activations, generation=generation)


@dataclass
class Verdict:
    fits: bool
    message: str  # '' when it fits
    suggestions: list[str]


def check(cfg, shape: Shape | None, gpus: list[tuple[str, int, int]]) -> Verdict:
    """Whether the run fits on one of `gpus` ((name, memory MiB, GPUs per worker) of the workers that serve its
    queue), and if not, what would make it fit."""
    if shape is None or not gpus:
        return Verdict(True, "", [])
    most = max(g[2] for g in gpus)
    if cfg.num_processes > most:
        return Verdict(False, f"it asks for {cfg.num_processes} processes (one GPU each) and the workers of its "
                              f"queue hold at most {most} GPUs each", [f"num_processes {most} or fewer"])
    memory = max(g[1] for g in gpus if g[2] >= cfg.num_processes) * 2**20
    need = estimate(cfg, shape)
    if need.total <= memory:
        return Verdict(True, "", [])
    name = next(g[0] for g in gpus if g[1] * 2**20 == memory)
    tries = []
    if not cfg.lora:
        tries.append(("LoRA (lora on)", {"lora": True}))
    if not cfg.gradient_checkpointing:
        tries.append(("gradient checkpointing", {"gradient_checkpointing": True}))
    micro = _micro(cfg)
    for accum in (2, 4, 8, 16, 32, 64):
        if micro > 1 and cfg.batch_size % (accum * cfg.gradient_accumulation_steps * cfg.num_processes) == 0:
            tries.append((f"gradient_accumulation_steps {accum * cfg.gradient_accumulation_steps} (the same batch in "
                          f"smaller micro-batches)", {"gradient_accumulation_steps": accum * cfg.gradient_accumulation_steps}))
    suggestions = []
    for label, change in tries:
        try:
            other = dataclasses.replace(cfg, **change)
        except ValueError:
            continue
        total = estimate(other, shape).total
        if total <= memory:
            suggestions.append(f"{label}: {gib(total)}")
    if not suggestions and not cfg.lora:
        both = dataclasses.replace(cfg, lora=True, gradient_checkpointing=True)
        if estimate(both, shape).total <= memory:
            suggestions.append(f"LoRA with gradient checkpointing: {gib(estimate(both, shape).total)}")
    message = (f"needs {need.text()}, more than the {gib(memory)} of the largest GPU ({name}) of its queue's workers"
               + ("; it would fit with " + "; or ".join(suggestions) if suggestions
                  else "; no single change fits it: a smaller model, a smaller batch or shorter sequences"))
    return Verdict(False, message, suggestions)


def _micro(cfg) -> int:
    from training import options

    return options.micro_batch(cfg)
