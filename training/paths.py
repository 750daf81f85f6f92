"""Which server paths a run config reads (models, reference and reward models, datasets, signals' models and
folders), and the one test of whether a path lies under allowed roots. The web app applies them before a run
is queued (webapp.experiments.references: the roots are the administrator's PTLAB_DATA_ROOTS); the CLI, run
by whoever owns the machine, does not."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.config import BaseConfig

BUILTIN_MODELS = ("tiny", "demo")


def under_roots(path: str, roots: list) -> bool:
    """Whether `path` is absolute, has no `..` part, and its real path (symbolic links followed) is one of
    `roots` or inside one: the one test of "may this server read it" (the web app decides which roots)."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path or ".." in Path(path).parts:
        return False
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(Path(os.path.realpath(root))) for root in roots)


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
