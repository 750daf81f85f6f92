"""Every signal by kind: the built-ins, and plugins an administrator installed on the workers as entry
points of the group `ptlab.rewards` (a Signal subclass, or a plain function whose keyword-only
arguments with defaults are its parameters). Users name signals and set parameters; they never
supply code."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
from functools import cache
from typing import Any

from training.fields import opt
from training.rewards.base import Signal, SignalError
from training.rewards.combine import TaskGold, WeightedSum
from training.rewards.models import PairwiseJudge, PointwiseJudge, RewardModel
from training.rewards.verifiers import VERIFIERS

GROUP = "ptlab.rewards"
BUILTIN: dict[str, type[Signal]] = {c.kind: c for c in (TaskGold, *VERIFIERS, WeightedSum, RewardModel,
                                                         PointwiseJudge, PairwiseJudge)}


def registry() -> dict[str, type[Signal]]:
    """Built-in signals, then plugins (a plugin never replaces a built-in)."""
    return {**plugins(), **BUILTIN}


@cache
def plugins() -> dict[str, type[Signal]]:
    """The installed plugins, loaded once per process (`plugins.cache_clear()` rescans)."""
    found = {}
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name in BUILTIN:
            continue
        obj = ep.load()
        found[ep.name] = plugin_class(ep.name, obj, ep.value)
    return found


def plugin_class(name: str, obj: Any, origin: str = "") -> type[Signal]:
    """A Signal class for a plugin entry point's object."""
    if isinstance(obj, type) and issubclass(obj, Signal):
        return type(obj.__name__, (obj,), {"kind": name}) if obj.kind != name else obj
    if not callable(obj):
        raise TypeError(f"entry point {name} ({origin}) is neither a Signal subclass nor a function")
    params = [p for p in inspect.signature(obj).parameters.values()
              if p.kind is p.KEYWORD_ONLY and p.default is not p.empty]
    doc = (inspect.getdoc(obj) or "").split("\n\n")[0].replace("\n", " ")

    def call(self, completions, **columns):
        return obj(completions, **columns, **{p.name: getattr(self, p.name) for p in params})

    fields = [(p.name, type(p.default), opt(p.default, f"Plugin parameter {p.name}.")) for p in params]
    return dataclasses.make_dataclass(
        f"Plugin_{name}", fields, bases=(Signal,),
        namespace={"kind": name, "description": doc or f"Plugin {origin}.", "__call__": call})


def build(spec: str | dict) -> Signal:
    """A checked signal from its spec (its models are not loaded: `setup` does that). The signal's `__name__`
    is the spec's `name`, else its kind: TRL logs reward functions by it, and monitors are logged under it."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, dict):
        raise SignalError("kind", f"a signal is a kind or an object with a kind, got {type(spec).__name__}")
    params = dict(spec)
    kind = params.pop("kind", None)
    name = params.pop("name", kind)
    known = registry()
    if kind not in known:
        raise SignalError("kind", f"unknown signal {kind!r}; known: {', '.join(sorted(known))}")
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise SignalError("name", f"must be letters, digits, '_' or '-' (got {name!r})")
    cls = known[kind]
    allowed = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in params:
        if key not in allowed:
            raise SignalError(key, f"unknown parameter of {kind}; allowed: {', '.join(sorted(allowed)) or 'none'}")
    signal = cls(**params)
    signal.__name__ = name
    return signal


def describe() -> list[dict[str, Any]]:
    """Every signal with its description and parameters, for the CLI and the web form."""
    builtin = set(BUILTIN)
    return [{"kind": kind, "description": cls.description, "plugin": kind not in builtin, "params": cls.params()}
            for kind, cls in sorted(registry().items(), key=lambda kv: (kv[0] not in builtin, kv[0]))]
