"""Run configurations: one dataclass per method, validated on creation.

Every field carries its help text and bounds in `metadata`, so the CLI, the web form and the
API all describe and check a field the same way. `from_dict` is the only way JSON gets in.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from training.fields import ConfigError, check_fields, field_specs, opt

METHODS = ("sft", "dpo", "ppo", "grpo", "rloo", "best_of_n", "reward")


@dataclass
class BaseConfig:
    """Keys every run has, whatever its method."""

    method: ClassVar[str] = ""

    model: str = opt("tiny", "Base model: 'tiny', 'demo' (SmolLM2-135M-Instruct), a local folder or a hub id.")
    task: str = opt("arithmetic", "Built-in task (arithmetic, sentiment, format) or a path to a JSONL file.")
    dataset: str | dict = opt("", "A dataset instead of the task: a .jsonl/.csv/.parquet file, a save_to_disk folder "
                              "or a hub id, or {\"path\": ..., \"mapping\": {role: column}, \"split\": ..., "
                              "\"config\": ..., \"eval_fraction\": ...}.", advanced=True)
    max_steps: int = opt(200, "Optimizer steps to train.", min=1, max=1_000_000)
    seed: int = opt(0, "Random seed (data order, sampling, new weights such as LoRA or value heads).",
                    min=0, max=2**31 - 1)
    eval_every: int = opt(50, "Evaluate every N steps (also at step 0 and at the end). One evaluation samples "
                              "eval_prompts x eval_samples completions: on tiny about as long as 7 SFT steps.",
                          min=1, max=1_000_000)
    eval_prompts: int = opt(16, "Held-out prompts used by the uniform evaluation.", min=1, max=1000)
    eval_samples: int = opt(4, "Completions sampled per eval prompt (K).", min=1, max=64)
    max_new_tokens: int = opt(16, "Longest completion, in tokens, for training and evaluation.", min=1, max=4096)
    learning_rate: float = opt(1e-4, "Adam learning rate.", min=0.0, max=1.0)
    batch_size: int = opt(8, "Sequences (or completions, for GRPO/RLOO) per optimizer step.", min=1, max=4096)
    reference_model: str = opt("", "Reference model for KL; empty means the run's starting model.")
    lora: bool = opt(False, "Train LoRA adapters instead of all weights.")
    lora_r: int = opt(16, "LoRA rank.", min=1, max=1024, advanced=True)
    lora_alpha: int = opt(32, "LoRA alpha.", min=1, max=4096, advanced=True)
    checkpoint_every: int = opt(0, "Save a resumable checkpoint every N steps (0: never).", min=0, max=1_000_000)
    device: str = opt("auto", "Where to train.", choices=("auto", "cpu", "cuda"), advanced=True)
    gold_reward: str | dict = opt("", "Signal the uniform evaluation scores with (eval/reward): a kind such as "
                                  "'numeric_match' or {\"kind\": ..., parameters}; empty: the task's own gold reward. "
                                  "`python -m training rewards` lists them.", advanced=True)
    monitors: list = opt([], "More signals scored at every evaluation, logged as eval/reward/<name>.", advanced=True)

    def __post_init__(self) -> None:
        self._parse_json_text()
        check_fields(self)
        if self.task.endswith(".jsonl") and not Path(self.task).is_file():
            raise ConfigError("task", f"no such JSONL file: {self.task}")
        if self.dataset != "":
            from training.tasks.dataset import DatasetSpec

            try:
                DatasetSpec.of(self.dataset)
            except ConfigError as e:
                raise ConfigError("dataset", e.message if e.key == "dataset" else f"{e.key}: {e.message}") from e
        if self.gold_reward != "":
            check_signal("gold_reward", self.gold_reward)
        names = [check_signal("monitors", spec, index=i).__name__ for i, spec in enumerate(self.monitors)]
        if len(set(names)) != len(names):
            raise ConfigError("monitors", f"two monitors share a name ({', '.join(names)}): give them a \"name\"")

    def _parse_json_text(self) -> None:
        """Web forms send text: a list field's or an object field's JSON text (`[]`, `{"kind": ...}`) is
        parsed here, so the form, the API and a JSON config file say the same thing."""
        for name, wants in (("monitors", "["), ("gold_reward", "{"), ("dataset", "{"), ("reward", "{")):
            value = getattr(self, name, None)
            if not isinstance(value, str) or not value.strip().startswith(wants) and not (wants == "[" and value == ""):
                continue
            try:
                setattr(self, name, json.loads(value) if value.strip() else [])
            except json.JSONDecodeError as e:
                raise ConfigError(name, f"not valid JSON ({e.msg} at column {e.colno})") from e

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def field_specs(cls) -> list[dict[str, Any]]:
        """Field descriptions for forms and docs: name, type, default, help, bounds."""
        return field_specs(cls)


@dataclass
class SFTConfig(BaseConfig):
    method: ClassVar[str] = "sft"
    learning_rate: float = opt(1e-3, "Adam learning rate.", min=0.0, max=1.0)


@dataclass
class DPOConfig(BaseConfig):
    method: ClassVar[str] = "dpo"
    learning_rate: float = opt(2e-4, "Adam learning rate.", min=0.0, max=1.0)
    beta: float = opt(0.1, "DPO temperature: strength of the implicit KL constraint.", min=0.0, max=100.0)
    loss_type: str = opt("sigmoid", "DPO loss variant.", choices=("sigmoid", "ipo", "hinge"))
    sft_weight: float = opt(0.0, "Weight of an added NLL loss on the chosen completions (RPO); 0 is plain DPO. "
                            "Keeps DPO from pushing probability off both completions.", min=0.0, max=100.0)


@dataclass
class _OnlineConfig(BaseConfig):
    """Shared by the methods that sample during training."""

    reward_model: str = opt("", "Folder of a trained reward model to optimise instead of the task's gold reward "
                            "(the same as reward {\"kind\": \"reward_model\", \"path\": ...}).")
    reward: str | dict = opt("", "Training signal: a kind such as 'numeric_match' or {\"kind\": ..., parameters}; empty: "
                             "the reward model above, else the task's gold reward. When it differs from the gold "
                             "signal, evaluation logs it as eval/proxy_reward.", advanced=True)
    temperature: float = opt(1.0, "Sampling temperature during training.", min=0.01, max=10.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward != "" and self.reward_model:
            raise ConfigError("reward", "set either reward or reward_model, not both")
        if self.reward != "":
            check_signal("reward", self.reward)

    def training_signal(self) -> str | dict:
        """The spec of the signal this run optimises."""
        if self.reward != "":
            return self.reward
        return {"kind": "reward_model", "path": self.reward_model} if self.reward_model else "task"


@dataclass
class GRPOConfig(_OnlineConfig):
    method: ClassVar[str] = "grpo"
    learning_rate: float = opt(2e-4, "Adam learning rate.", min=0.0, max=1.0)
    num_generations: int = opt(4, "Completions per prompt (the group); must divide batch_size.", min=2, max=256)
    beta: float = opt(0.04, "KL coefficient against the reference (TRL's default 0 disables KL).", min=0.0, max=100.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size % self.num_generations:
            raise ConfigError("batch_size", f"must be divisible by num_generations ({self.num_generations})")


@dataclass
class RLOOConfig(GRPOConfig):
    method: ClassVar[str] = "rloo"
    beta: float = opt(0.05, "KL coefficient against the reference.", min=0.0, max=100.0)


@dataclass
class PPOConfig(_OnlineConfig):
    method: ClassVar[str] = "ppo"
    learning_rate: float = opt(2e-4, "Adam learning rate (policy and value head).", min=0.0, max=1.0)
    kl_coef: float = opt(0.05, "Per-token KL penalty against the reference, folded into the reward.",
                         min=0.0, max=100.0)
    gamma: float = opt(1.0, "Discount factor.", min=0.0, max=1.0, advanced=True)
    lam: float = opt(0.95, "GAE lambda.", min=0.0, max=1.0, advanced=True)
    cliprange: float = opt(0.2, "Policy ratio clip range.", min=0.0, max=10.0)
    cliprange_value: float = opt(0.2, "Value clip range.", min=0.0, max=100.0, advanced=True)
    vf_coef: float = opt(0.1, "Value loss weight.", min=0.0, max=100.0, advanced=True)
    ppo_epochs: int = opt(4, "Passes over each batch of rollouts.", min=1, max=100)
    num_minibatches: int = opt(2, "Minibatches per PPO epoch; must divide batch_size.", min=1, max=4096)
    whiten_advantages: bool = opt(True, "Normalise advantages to zero mean, unit variance.", advanced=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size % self.num_minibatches:
            raise ConfigError("num_minibatches", f"must divide batch_size ({self.batch_size})")


@dataclass
class BestOfNConfig(_OnlineConfig):
    """No training: the best of n samples of the starting model by the training signal (a baseline)."""

    method: ClassVar[str] = "best_of_n"
    n: int = opt(16, "Completions sampled per eval sample; the best by the training signal is kept. Evaluated at "
                     "n = 1, 2, 4, ... up to this (steps 0, 1, 2, ...): KL is log n - (n - 1)/n.", min=1, max=1024)


@dataclass
class RewardModelConfig(BaseConfig):
    """Trains a reward model on the task's preference pairs (TRL's RewardTrainer)."""

    method: ClassVar[str] = "reward"
    learning_rate: float = opt(5e-4, "Adam learning rate.", min=0.0, max=1.0)


CONFIG_CLASSES: dict[str, type[BaseConfig]] = {
    c.method: c for c in (SFTConfig, DPOConfig, PPOConfig, GRPOConfig, RLOOConfig, BestOfNConfig, RewardModelConfig)
}


def from_dict(data: dict[str, Any]) -> BaseConfig:
    """Build and validate the config for `data["method"]`; errors name the offending key."""
    if not isinstance(data, dict):
        raise ConfigError("config", "must be a JSON object")
    method = data.get("method")
    if method not in CONFIG_CLASSES:
        raise ConfigError("method", f"must be one of {', '.join(CONFIG_CLASSES)} (got {method!r})")
    cls = CONFIG_CLASSES[method]
    allowed = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key != "method" and key not in allowed:
            raise ConfigError(key, f"unknown key for method {method!r}; allowed: {', '.join(sorted(allowed))}")
    return cls(**{k: v for k, v in data.items() if k != "method"})


def check_signal(key: str, spec: Any, index: int | None = None):
    """Build a signal from its spec to check it (no model is loaded); errors name the config key."""
    from training.rewards import SignalError, build

    try:
        return build(spec)
    except SignalError as e:
        where = f"signal {index}: " if index is not None else ""
        raise ConfigError(key, f"{where}{e}") from e


def load(path: str | Path) -> BaseConfig:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ConfigError("config", f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from e
    return from_dict(data)
