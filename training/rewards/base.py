"""Signals (reward sources): named, with typed parameters checked on creation, each a TRL-style reward
function `(completions, **columns) -> list[float]`. A config names one by a spec: its kind as a string
(`"exact_match"`) or an object (`{"kind": "numeric_match", "name": "num", "tolerance": 0.01}`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from training.fields import ConfigError, check_fields, field_specs


class SignalError(ConfigError):
    """A signal's spec, parameter or input is wrong; `key` names the parameter (or 'kind', 'columns')."""


@dataclass
class SignalEnv:
    """What a signal may need to get ready: where models go, and the run's task (for its gold reward)."""

    device: Any = "cpu"
    task: Any = None


@dataclass
class Signal:
    """A reward source. Subclasses are dataclasses whose fields (made with `opt`) are the parameters."""

    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, SignalError)

    def setup(self, env: SignalEnv) -> None:
        """Load what scoring needs (models); called once before the first call. Verifiers need nothing."""

    def __call__(self, completions: list, **columns) -> list[float]:
        raise NotImplementedError

    @classmethod
    def params(cls) -> list[dict[str, Any]]:
        return field_specs(cls)

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}


def column(columns: dict[str, list], name: str, signal: str, n: int) -> list:
    """The column a signal compares against, or an error that says which columns there are."""
    if name not in columns:
        have = ", ".join(sorted(k for k in columns if k != "prompts")) or "none"
        raise SignalError("columns", f"{signal} needs the column {name!r}; the data passes: {have}")
    values = columns[name]
    if len(values) != n:
        raise SignalError("columns", f"{signal}: column {name!r} has {len(values)} values for {n} completions")
    return values
