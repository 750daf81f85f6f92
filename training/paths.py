"""Which server folders a run may read: models, datasets and reward models on the filesystem must lie under
a root an administrator lists in PTLAB_DATA_ROOTS (separated by ':'). The web app checks a run's config with
`check_paths` before queueing it; the CLI, run by whoever owns the machine, does not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.config import BaseConfig, ConfigError

BUILTIN_MODELS = ("tiny", "demo")


def data_roots(value: str | None = None) -> list[Path]:
    """The allowed roots, resolved (symlinks followed); `value` defaults to $PTLAB_DATA_ROOTS."""
    value = os.environ.get("PTLAB_DATA_ROOTS", "") if value is None else value
    return [Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p.strip()]


def is_local(name: str) -> bool:
    """A filesystem path rather than a built-in model or a hub id (the rule training.models.resolve uses)."""
    if not name or name in BUILTIN_MODELS:
        return False
    return name.startswith(("/", ".", "~")) or Path(name).expanduser().exists()


def local_paths(cfg: BaseConfig) -> list[tuple[str, str]]:
    """(config key, path) for everything on the filesystem a run would read."""
    found = [(key, getattr(cfg, key, "")) for key in ("model", "reference_model", "reward_model")]
    if cfg.task.endswith(".jsonl"):
        found.append(("task", cfg.task))
    dataset = cfg.dataset
    if dataset and not (isinstance(dataset, dict) and dataset.get("hub") is True):  # a hub id is no path
        found.append(("dataset", dataset if isinstance(dataset, str) else dataset.get("path", "")))
    for key in ("reward", "gold_reward", "monitors"):
        for path in _signal_paths(getattr(cfg, key, "")):
            found.append((key, path))
    return [(k, p) for k, p in found if isinstance(p, str) and is_local(p)]


def _signal_paths(spec: Any) -> list[str]:
    if isinstance(spec, list):
        return [p for s in spec for p in _signal_paths(s)]
    if not isinstance(spec, dict):
        return []
    out = [spec[k] for k in ("path", "model") if isinstance(spec.get(k), str)]
    return out + _signal_paths(spec.get("signals", []))


def check_paths(cfg: BaseConfig, roots: list[Path], keys: tuple[str, ...] | None = None) -> None:
    """Refuse a config that reads a server path outside `roots` (only under `keys`, if given); the error
    names the key and the path."""
    for key, path in local_paths(cfg):
        if keys is not None and key not in keys:
            continue
        real = Path(path).expanduser().resolve()
        if not any(real == root or root in real.parents for root in roots):
            allowed = ", ".join(map(str, roots)) or "none configured"
            raise ConfigError(key, f"{path} is outside the folders this server may read ({allowed}); an "
                              "administrator lists them in PTLAB_DATA_ROOTS")
