"""JSON from untrusted sources with bounds: nesting depth, integer size, no NaN/Infinity, no NUL or lone
surrogate in any string. Every JSON parser fed by users (API bodies, JSONL uploads, report imports) uses
`loads`, so a hostile document is a JSONLimitError (a ValueError) and never a RecursionError or a crash."""

from __future__ import annotations

import json

MAX_DEPTH = 32  # objects and arrays inside each other
MAX_INT_DIGITS = 100  # longer integers cost time to convert; ranges are for the schema or form to check


class JSONLimitError(ValueError):
    """The text is not JSON this app reads; `path` (like `$.runs[3].seed`) says where, when known."""

    def __init__(self, message: str, path: str = "$"):
        super().__init__(f"{path}: {message}" if path != "$" else message)
        self.message, self.path = message, path


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONLimitError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _constant(name: str):
    raise JSONLimitError(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise JSONLimitError(f"the number {text[:30]} is out of range")
    return value


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH, text_checks: bool = True):
    """`json.loads` with the bounds above. Raises JSONLimitError (or json.JSONDecodeError: both ValueError).
    `text_checks=False` leaves NUL and lone surrogates to the caller (a form that reports them by field)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        data = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise JSONLimitError(f"nested deeper than {max_depth} levels") from None
    check(data, max_depth=max_depth, text_checks=text_checks)
    return data


def check(data, *, max_depth: int = MAX_DEPTH, text_checks: bool = True) -> None:
    """Depth and strings of already parsed JSON (iterative: deep input cannot exhaust the stack)."""
    if isinstance(data, str) and text_checks:
        _check_text(data, None)
    if not isinstance(data, dict | list):
        return
    stack = [(data, 0, None)]
    while stack:
        value, depth, where = stack.pop()
        if depth >= max_depth:
            raise JSONLimitError(f"nested deeper than {max_depth} levels", path_text(where))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        if not text_checks:
            stack.extend((v, depth + 1, (where, k)) for k, v in items if isinstance(v, dict | list))
            continue
        for k, v in items:
            if isinstance(k, str):
                _check_text(k, where)
            if isinstance(v, str):
                _check_text(v, (where, k))
            elif isinstance(v, dict | list):
                stack.append((v, depth + 1, (where, k)))


def path_text(where) -> str:
    """`$.runs[3].seed` from the (parent, key) chain `check` keeps."""
    keys = []
    while where is not None:
        where, key = where
        keys.append(key)
    return "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in reversed(keys))


def _check_text(text: str, where) -> None:
    if "\x00" in text:
        raise JSONLimitError("contains a NUL character", path_text(where))
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONLimitError("contains a lone surrogate (not valid Unicode text)", path_text(where)) from None
