"""User datasets as JSONL: `{prompt, completion}`, `{prompt, chosen, rejected}` or `{prompt, answer}` rows.

The whole file is checked before anything is used: a bad line raises JSONLError with its line
number and the reason, and nothing is half-loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

from training import safejson
from training.tasks.base import Example, Task, text_of

SHAPES = ({"prompt", "completion"}, {"prompt", "chosen", "rejected"}, {"prompt", "answer"})
MAX_LINES = 200_000


class JSONLError(ValueError):
    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def parse_jsonl(text: str, max_rows: int = MAX_LINES) -> list[dict[str, str]]:
    """Rows of a JSONL text. Lines end at "\\n" only (a raw U+2028 inside a JSON string is not a line
    break); a UTF-8 byte order mark at the start is ignored; each line is JSON with safejson's bounds."""
    rows = []
    for n, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        if len(rows) >= max_rows:
            raise JSONLError(n, f"too many rows (at most {max_rows})")
        try:
            row = safejson.loads(raw)
        except json.JSONDecodeError as e:
            raise JSONLError(n, f"not valid JSON ({e.msg} at column {e.colno})") from e
        except safejson.JSONLimitError as e:
            raise JSONLError(n, f"not accepted ({e})") from e
        if not isinstance(row, dict):
            raise JSONLError(n, "must be a JSON object")
        keys = set(row)
        if keys not in SHAPES:
            shapes = "; ".join("{" + ", ".join(sorted(s)) + "}" for s in SHAPES)
            raise JSONLError(n, f"has keys {{{', '.join(sorted(keys))}}}; expected one of {shapes}")
        for k, v in row.items():
            if not isinstance(v, str):
                raise JSONLError(n, f"{k!r} must be a string, got {type(v).__name__}")
            if not v.strip():
                raise JSONLError(n, f"{k!r} is empty")
        rows.append(row)
    if not rows:
        raise JSONLError(1, "the file holds no rows")
    return rows


def _tokens(s: str) -> list[str]:
    return re.findall(r"\w+", s.lower())


def overlap_f1(completions, reference, **_) -> list[float]:
    """Token-overlap F1 between completion and the reference answer (1.0 for an exact match)."""
    out = []
    for c, ref in zip(completions, reference, strict=True):
        got, want = _tokens(text_of(c)), _tokens(ref)
        common = sum(min(got.count(t), want.count(t)) for t in set(want))
        if not got or not want or common == 0:
            out.append(0.0)
            continue
        p, r = common / len(got), common / len(want)
        out.append(2 * p * r / (p + r))
    return out


class JSONLTask(Task):
    description = "User data from a JSONL file; gold reward: token-overlap F1 with the reference answer."
    reward_fns = (overlap_f1,)

    def __init__(self, path: str | Path | None = None, text: str | None = None, name: str | None = None):
        if text is None:
            text = Path(path).read_text(encoding="utf-8")
        self.rows = parse_jsonl(text)
        self.name = name or (Path(path).name if path else "upload.jsonl")

    def examples(self) -> list[Example]:
        out = []
        for row in self.rows:
            ref = row.get("completion") or row.get("chosen") or row.get("answer")
            out.append(Example(prompt=row["prompt"], reference=ref, rejected=row.get("rejected", ""),
                               columns={"reference": ref}))
        return out
