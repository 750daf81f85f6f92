"""Built-in verifiers: rule-based signals computed from the completion text (and a column of the row).
Each returns one float per completion; malformed completions score 0, never raise."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache

from training.fields import opt
from training.rewards.base import Signal, SignalError, column
from training.tasks.base import text_of

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_HASH = re.compile(r"####\s*(" + _NUMBER.pattern + ")")
_BOXED = re.compile(r"\\boxed\{\s*\$?\s*(" + _NUMBER.pattern + r")\s*\$?\s*\}")


def normalize_text(s: str) -> str:
    """Case-folded, whitespace collapsed, surrounding punctuation and quotes removed."""
    return " ".join(s.casefold().split()).strip(" .!?\"'`")


def extract_number(text: str, how: str = "auto") -> float | None:
    """The answer number of a text: `\\boxed{n}`, `#### n` or the last number ('auto': the first that is there)."""
    found = None
    if how in ("auto", "boxed") and (m := _BOXED.findall(text)):
        found = m[-1]
    elif how in ("auto", "hash") and (m := _HASH.findall(text)):
        found = m[-1]
    elif how in ("auto", "last") and (m := _NUMBER.findall(text)):
        found = m[-1]
    if found is None:
        return None
    try:
        value = float(found.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _regex(pattern: str, key: str = "pattern") -> re.Pattern:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise SignalError(key, f"not a valid regular expression: {e}") from e


@dataclass
class ExactMatch(Signal):
    kind = "exact_match"
    description = "1 when the completion equals the column's value (normalised: case, spaces, end punctuation)."
    column: str = opt("answer", "Column holding the expected answer.")
    normalize: bool = opt(True, "Ignore case, repeated spaces and surrounding punctuation.")

    def __call__(self, completions, **columns):
        want = column(columns, self.column, self.kind, len(completions))
        norm = normalize_text if self.normalize else str.strip
        return [float(norm(text_of(c)) == norm(str(w))) for c, w in zip(completions, want, strict=True)]


@dataclass
class NumericMatch(Signal):
    kind = "numeric_match"
    description = ("1 when the completion's answer number equals the column's (\\boxed{n}, '#### n' or the last "
                   "number), within a tolerance.")
    column: str = opt("answer", "Column holding the expected answer (a number, or a text whose answer number counts).")
    extract: str = opt("auto", "Where the completion's answer is: auto (\\boxed{}, then '####', then the last "
                       "number), boxed, hash or last.", choices=("auto", "boxed", "hash", "last"))
    tolerance: float = opt(1e-6, "Largest absolute difference still counted as right.", min=0.0)
    relative_tolerance: float = opt(0.0, "Largest difference relative to the expected value still counted as right.",
                                    min=0.0)

    def __call__(self, completions, **columns):
        want = column(columns, self.column, self.kind, len(completions))
        out = []
        for i, (c, w) in enumerate(zip(completions, want, strict=True)):
            expected = w if isinstance(w, int | float) and not isinstance(w, bool) else extract_number(str(w))
            if expected is None:
                raise SignalError("columns", f"{self.kind}: row {i}: column {self.column!r} holds no number: {str(w)[:80]!r}")
            got = extract_number(text_of(c), self.extract)
            ok = got is not None and math.isclose(got, float(expected), abs_tol=self.tolerance,
                                                  rel_tol=self.relative_tolerance)
            out.append(float(ok))
        return out


@dataclass
class RegexMatch(Signal):
    kind = "regex_match"
    description = ("1 when the pattern's first group (or whole match) in the completion equals the column's value; "
                   "with no column, 1 when the pattern is found.")
    pattern: str = opt(r"[Aa]nswer:\s*(.+)", "Regular expression searched in the completion.")
    column: str = opt("answer", "Column the captured text must equal (normalised); empty: the pattern must be found.")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._re = _regex(self.pattern)

    def __call__(self, completions, **columns):
        want = column(columns, self.column, self.kind, len(completions)) if self.column else [None] * len(completions)
        out = []
        for c, w in zip(completions, want, strict=True):
            m = self._re.search(text_of(c))
            if m is None:
                out.append(0.0)
            elif w is None:
                out.append(1.0)
            else:
                got = m.group(1) if self._re.groups else m.group(0)
                out.append(float(got is not None and normalize_text(got) == normalize_text(str(w))))
        return out


@dataclass
class FormatPattern(Signal):
    kind = "format"
    description = "1 when the whole completion (surrounding whitespace removed) matches the pattern, else 0."
    pattern: str = opt(r"(?s).*", "Regular expression the whole completion must match, e.g. "
                       r"'<think>.*</think>\s*Answer: .+'.")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._re = _regex(self.pattern)

    def __call__(self, completions, **_):
        return [float(self._re.fullmatch(text_of(c).strip()) is not None) for c in completions]


@dataclass
class LengthTarget(Signal):
    kind = "length"
    description = ("1 within `slack` of the target length, falling linearly to 0 at twice the target's distance; "
                   "counts words or characters.")
    target: int = opt(50, "Target length.", min=1)
    unit: str = opt("words", "What is counted.", choices=("words", "chars"))
    slack: int = opt(0, "Distance from the target that still scores 1.", min=0)

    def __call__(self, completions, **_):
        out = []
        for c in completions:
            text = text_of(c)
            n = len(text.split()) if self.unit == "words" else len(text)
            miss = max(0, abs(n - self.target) - self.slack)
            out.append(max(0.0, 1.0 - miss / self.target))
        return out


_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_json(text: str, allow_fences: bool = True):
    """The JSON value of a text, or raises ValueError; a ```json fenced block counts when allowed."""
    text = text.strip()
    if allow_fences and (m := _FENCE.match(text)):
        text = m.group(1).strip()
    return json.loads(text)


@dataclass
class ValidJSON(Signal):
    kind = "valid_json"
    description = "1 when the completion is valid JSON (optionally an object with the required keys), else 0."
    require_object: bool = opt(False, "Only a JSON object counts.")
    keys: list[str] = opt([], "Keys the object must have (implies require_object).")
    allow_fences: bool = opt(True, "Accept a ```json fenced block.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not all(isinstance(k, str) for k in self.keys):
            raise SignalError("keys", "must be a list of strings")

    def __call__(self, completions, **_):
        out = []
        for c in completions:
            try:
                value = parse_json(text_of(c), self.allow_fences)
            except ValueError:  # JSONDecodeError, and Python's limits on huge numbers
                out.append(0.0)
                continue
            if (self.require_object or self.keys) and not isinstance(value, dict):
                out.append(0.0)
            else:
                out.append(float(all(k in value for k in self.keys)))
        return out


@dataclass
class MultipleChoice(Signal):
    kind = "multiple_choice"
    description = ("1 when the completion picks the column's letter ('Answer: B', '(B)', 'B.', 'B'); a completion "
                   "naming two different letters scores 0.")
    column: str = opt("answer", "Column holding the correct letter.")
    letters: str = opt("ABCD", "The option letters.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.letters.isalpha() or len(set(self.letters.upper())) != len(self.letters):
            raise SignalError("letters", f"must be distinct letters (got {self.letters!r})")
        ls = re.escape(self.letters.upper())
        self._stated = re.compile(rf"answer\s*(?:is|:)?\s*[:\-]?\s*\(?([{ls}])\b\)?", re.IGNORECASE)
        self._alone = re.compile(rf"(?<![\w'])\(?([{ls}])\)?(?![\w'])")

    def pick(self, text: str) -> str | None:
        if m := self._stated.findall(text):
            return m[-1].upper()
        found = set(self._alone.findall(text))
        return found.pop() if len(found) == 1 else None

    def __call__(self, completions, **columns):
        want = column(columns, self.column, self.kind, len(completions))
        return [float(self.pick(text_of(c)) == str(w).strip().strip("()").upper())
                for c, w in zip(completions, want, strict=True)]


def tokens(s: str) -> list[str]:
    return re.findall(r"\w+", s.lower())


def f1(got: list[str], want: list[str]) -> float:
    common = sum(min(got.count(t), want.count(t)) for t in set(want))
    if not got or not want or common == 0:
        return 0.0
    p, r = common / len(got), common / len(want)
    return 2 * p * r / (p + r)


@dataclass
class TokenF1(Signal):
    kind = "token_f1"
    description = "Token-overlap F1 (words, lower-cased) between the completion and the column's text."
    column: str = opt("reference", "Column holding the reference text.")

    def __call__(self, completions, **columns):
        want = column(columns, self.column, self.kind, len(completions))
        return [f1(tokens(text_of(c)), tokens(str(w))) for c, w in zip(completions, want, strict=True)]


@cache
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@dataclass
class Sentiment(Signal):
    kind = "sentiment"
    description = "VADER's compound sentiment of the completion, in [-1, 1] (negated with positive=false)."
    positive: bool = opt(True, "Reward positive sentiment (false: negative).")

    def __call__(self, completions, **_):
        sign = 1.0 if self.positive else -1.0
        return [sign * _vader().polarity_scores(text_of(c))["compound"] for c in completions]


VERIFIERS = (ExactMatch, NumericMatch, RegexMatch, FormatPattern, LengthTarget, ValidJSON, MultipleChoice, TokenF1,
             Sentiment)
