"""Typed, documented fields shared by run configs and reward-signal parameters: help text and bounds
live in each field's `metadata`, and `check_field` is the one type and range check."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A config value is wrong; `key` names the offending key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
        choices: tuple | None = None, advanced: bool = False) -> Any:
    """A field with its help text and the range of allowed values (lists and dicts get a fresh copy each)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "advanced": advanced}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def field_specs(cls) -> list[dict[str, Any]]:
    """Field descriptions for forms and docs: name, type, default, help, bounds."""
    hints = typing.get_type_hints(cls)
    return [{"name": f.name, "type": type_name(hints[f.name]), "default": default_of(f), **f.metadata}
            for f in dataclasses.fields(cls) if f.init]


def check_fields(obj, error=ConfigError) -> None:
    """Check every field of a dataclass instance against its type hint, choices and bounds."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.init:
            check_field(f, hints[f.name], getattr(obj, f.name), error)


def check_field(f: dataclasses.Field, hint: Any, value: Any, error=ConfigError) -> None:
    name, meta = f.name, f.metadata
    expected = hint.__args__ if isinstance(hint, types.UnionType) else (hint,)
    if not any(is_instance(value, t) for t in expected):
        raise error(name, f"must be {type_name(hint)}, got {type(value).__name__} {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise error(name, f"must be one of {', '.join(map(str, meta['choices']))} (got {value!r})")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise error(name, f"must be between {lo} and {hi} (got {value!r})")


def is_instance(value: Any, t: Any) -> bool:
    if t is float:  # JSON has one number type: accept ints for floats, never bools
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(t) or t)


NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a JSON object",
         list: "a list"}


def type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(type_name(t) for t in hint.__args__)
    return NAMES.get(typing.get_origin(hint) or hint, str(hint))
