"""Users' datasets: rows from a JSONL, CSV or Parquet file, a folder saved with `save_to_disk`, or a hub id
(`datasets.load_dataset`, on machines with a hub), mapped to roles by a column mapping.

Roles: `prompt` (text) or `messages` (a conversation; a last assistant turn is the completion),
`completion`, `chosen`, `rejected`, `answer`, `weight` (how much a row counts in DPO and reward-model training;
rows of weight 0 are left out); every other column is passed to reward signals under its own name. Everything
is checked before anything is used: a bad row raises DatasetError naming the row, the column and, for JSONL
and CSV, the line. The held-out split hashes each prompt (never the seed)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.fields import ConfigError, check_fields, opt
from training.tasks.base import Example, Task

ROLES = ("prompt", "messages", "completion", "chosen", "rejected", "answer", "weight")
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
MAX_ROWS = 1_000_000
# Column names each role is guessed from, best first (compared case-insensitively).
GUESSES = {
    "messages": ("messages", "conversation", "conversations", "chat", "dialog"),
    "prompt": ("prompt", "question", "instruction", "query", "problem", "input", "context"),
    "completion": ("completion", "response", "output", "solution", "target", "reply"),
    "chosen": ("chosen", "preferred", "response_chosen", "chosen_response", "winner", "good"),
    "rejected": ("rejected", "dispreferred", "response_rejected", "rejected_response", "loser", "bad"),
    "answer": ("answer", "final_answer", "ground_truth", "gold", "label", "reference_answer"),
    "weight": ("weight", "weights", "sample_weight", "example_weight"),
}
METHOD_NEEDS = {"sft": ("completion",), "dpo": ("chosen", "rejected"), "reward": ("chosen", "rejected"),
                "ppo": (), "grpo": (), "rloo": ()}


class DatasetError(ConfigError):
    """Bad data: names the row (0-based, as in the file's order), the column and, where there is one, the line."""

    def __init__(self, reason: str, *, row: int | None = None, column: str | None = None,
                 line: int | None = None):
        where = ", ".join(p for p in (f"line {line}" if line is not None else "",
                                      f"row {row}" if row is not None else "",
                                      f"column {column!r}" if column else "") if p)
        super().__init__("dataset", f"{where}: {reason}" if where else reason)
        self.row, self.column, self.line, self.reason = row, column, line, reason


@dataclass
class DatasetSpec:
    """Where a dataset is and how its columns map to roles (the run config's `dataset`)."""

    path: str = opt("", "A .jsonl, .csv or .parquet file, a folder saved with save_to_disk, or a hub dataset id.")
    config: str = opt("", "The hub dataset's configuration (name), if it has several.")
    split: str = opt("train", "Split to read from a hub dataset or a saved DatasetDict.")
    mapping: dict = opt({}, "Role -> column: prompt or messages, completion, chosen, rejected, answer, weight; "
                        "empty: guessed from the column names.")
    eval_fraction: float = opt(0.2, "Share of prompts held out for the uniform evaluation (fixed by a hash of "
                               "each prompt, never by the seed).", min=0.01, max=0.9)
    max_rows: int = opt(MAX_ROWS, "Refuse datasets with more rows.", min=1, max=MAX_ROWS)
    hub: bool = opt(False, "Read `path` as a Hugging Face dataset id (datasets.load_dataset), never as a local "
                    "file or folder.")
    hash: str = opt("", "The content hash of the version to train on (the web app records it when the dataset is "
                    "saved); the rows read must hash the same, else the run is refused. Empty: not checked.")

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.path.strip():
            raise ConfigError("dataset", "path: name a file, a folder or a hub dataset id")
        for role, col in self.mapping.items():
            if role not in ROLES:
                raise ConfigError("dataset", f"mapping: unknown role {role!r}; roles: {', '.join(ROLES)}")
            if not isinstance(col, str) or not col:
                raise ConfigError("dataset", f"mapping: {role} must name a column")
        if len(set(self.mapping.values())) != len(self.mapping):
            raise ConfigError("dataset", "mapping: a column is mapped to two roles")

    @classmethod
    def of(cls, value: str | dict) -> DatasetSpec:
        if isinstance(value, str):
            return cls(path=value)
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ConfigError("dataset", f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        return cls(**value)

    def kind(self) -> str:
        if self.hub:
            return "hub"
        p = Path(self.path).expanduser()
        if p.suffix.lower() in FORMATS:
            return FORMATS[p.suffix.lower()]
        if p.is_dir():
            return "saved"
        if self.path.startswith(("/", ".", "~")) or p.suffix:
            return "missing"
        return "hub"


# --- reading rows --------------------------------------------------------------------------------------
@dataclass
class Rows:
    """Raw rows (dicts) and, when the format has lines, the line each row starts on."""

    rows: list[dict[str, Any]]
    lines: list[int] | None = None

    def line(self, i: int) -> int | None:
        return self.lines[i] if self.lines else None


def read_rows(spec: DatasetSpec) -> Rows:
    kind = spec.kind()
    if kind == "missing":
        raise DatasetError(f"no such file or folder: {spec.path}")
    path = Path(spec.path).expanduser()
    if kind != "hub" and not path.exists():
        raise DatasetError(f"no such file: {spec.path}")
    if kind == "jsonl":
        out = read_jsonl(path, spec.max_rows)
    elif kind == "csv":
        out = read_csv(path, spec.max_rows)
    elif kind == "parquet":
        out = read_parquet(path)
    else:
        out = Rows(read_hf(spec))
    if not out.rows:
        raise DatasetError("the dataset holds no rows")
    if len(out.rows) > spec.max_rows:
        raise DatasetError(f"too many rows ({len(out.rows)}; at most {spec.max_rows})")
    return out


def read_jsonl(path: Path, max_rows: int = MAX_ROWS) -> Rows:
    rows, lines = [], []
    with open(path, encoding="utf-8") as f:
        try:
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                if len(rows) >= max_rows:
                    raise DatasetError(f"too many rows (at most {max_rows})", row=len(rows), line=n)
                try:
                    row = json.loads(raw)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"not valid JSON ({e.msg} at column {e.colno})", row=len(rows), line=n) from e
                if not isinstance(row, dict):
                    raise DatasetError("must be a JSON object", row=len(rows), line=n)
                rows.append(row)
                lines.append(n)
        except UnicodeDecodeError as e:
            raise DatasetError(f"not UTF-8 text (byte {e.start} of a line)", row=len(rows)) from e
    return Rows(rows, lines)


def read_csv(path: Path, max_rows: int = MAX_ROWS) -> Rows:
    rows, lines = [], []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise DatasetError("the file has no header row", line=1)
            if len(set(header)) != len(header) or not all(h.strip() for h in header):
                raise DatasetError("the header row has an empty or repeated column name", line=1)
            start = reader.line_num + 1
            for values in reader:
                if values:
                    if len(values) != len(header):
                        raise DatasetError(f"has {len(values)} fields; the header has {len(header)}",
                                           row=len(rows), line=start)
                    if len(rows) >= max_rows:
                        raise DatasetError(f"too many rows (at most {max_rows})", row=len(rows), line=start)
                    rows.append(dict(zip(header, values, strict=True)))
                    lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as e:
        raise DatasetError(f"not UTF-8 text (byte {e.start})", row=len(rows)) from e
    except csv.Error as e:
        raise DatasetError(f"not valid CSV ({e})", row=len(rows), line=start) from e
    return Rows(rows, lines)


def read_parquet(path: Path) -> Rows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several kinds (ArrowInvalid, OSError) for a damaged file
        raise DatasetError(f"not a readable Parquet file: {e}") from e
    return Rows(table.to_pylist())


def read_hf(spec: DatasetSpec) -> list[dict[str, Any]]:
    """A folder saved with `save_to_disk` (a Dataset, or a DatasetDict's `split`), or a hub id."""
    import datasets

    try:
        if spec.kind() == "saved":
            data = datasets.load_from_disk(str(Path(spec.path).expanduser()))
        else:
            data = datasets.load_dataset(spec.path, spec.config or None, split=spec.split)
    except (FileNotFoundError, ValueError, OSError, ConnectionError) as e:
        raise DatasetError(f"could not load {spec.path!r}: {e}") from e
    if isinstance(data, datasets.DatasetDict):
        if spec.split not in data:
            raise DatasetError(f"no split {spec.split!r}; the dataset has {', '.join(data)}")
        data = data[spec.split]
    return data.to_list()


# --- mapping -----------------------------------------------------------------------------------------
def guess_mapping(columns: list[str]) -> dict[str, str]:
    """Role -> column from common column names; `prompt` only when there is no `messages` column."""
    by_lower = {c.lower(): c for c in columns}
    mapping: dict[str, str] = {}
    for role, names in GUESSES.items():
        if role == "prompt" and "messages" in mapping:
            continue
        for name in names:
            col = by_lower.get(name)
            if col is not None and col not in mapping.values():
                mapping[role] = col
                break
    return mapping


def methods_for(mapping: dict[str, str]) -> tuple[str, ...]:
    """The methods a mapping can feed: every one needs prompts; SFT completions; DPO and reward models pairs.
    A messages column ending in an assistant turn gives completions."""
    if "prompt" not in mapping and "messages" not in mapping:
        return ()
    have = set(mapping) | ({"completion"} if "messages" in mapping else set())
    return tuple(m for m, needs in METHOD_NEEDS.items() if set(needs) <= have)


def _text(value: Any, role: str, row: int, col: str, line: int | None, *, numbers: bool = False) -> str:
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise DatasetError("is not a finite number", row=row, column=col, line=line)
        return str(value)
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise DatasetError(f"{role} must be text, got {kind}", row=row, column=col, line=line)
    if not value.strip():
        raise DatasetError(f"{role} is empty", row=row, column=col, line=line)
    return value


def _weight(value: Any, row: int, col: str, line: int | None) -> float:
    """A non-negative finite number; numeric text counts too (CSV holds nothing else)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = "null" if value is None else type(value).__name__
        raise DatasetError(f"weight must be a number, got {kind}", row=row, column=col, line=line)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except ValueError as e:
        raise DatasetError(f"weight must be a number, got {value!r}", row=row, column=col, line=line) from e
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DatasetError("weight is not a finite number", row=row, column=col, line=line)
    if number < 0:
        raise DatasetError(f"weight must not be negative, got {number:g}", row=row, column=col, line=line)
    return number


def _messages(value: Any, row: int, col: str, line: int | None) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DatasetError("messages must be a non-empty list of {role, content} objects", row=row, column=col,
                           line=line)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise DatasetError(f"message {i} must be {{role: system|user|assistant, content: text}}", row=row,
                               column=col, line=line)
        out.append({"role": m["role"], "content": m["content"]})
    return out


def to_examples(rows: Rows, mapping: dict[str, str]) -> list[Example]:
    """Every row as an Example, but those of weight 0; the first bad value raises DatasetError naming its row,
    column and line."""
    if "prompt" not in mapping and "messages" not in mapping:
        raise DatasetError("the mapping needs a prompt or a messages column")
    if "prompt" in mapping and "messages" in mapping:
        raise DatasetError("map either prompt or messages, not both")
    mapped = set(mapping.values())
    out = []
    for i, row in enumerate(rows.rows):
        line = rows.line(i)
        for role, col in mapping.items():
            if col not in row:
                raise DatasetError(f"the column mapped to {role} is missing", row=i, column=col, line=line)
        weight = _weight(row[mapping["weight"]], i, mapping["weight"], line) if "weight" in mapping else 1.0
        if "messages" in mapping:
            messages = _messages(row[mapping["messages"]], i, mapping["messages"], line)
            completion = ""
            if messages[-1]["role"] == "assistant" and "completion" not in mapping:
                completion, messages = messages[-1]["content"], messages[:-1]
            if not messages or messages[-1]["role"] != "user":
                raise DatasetError("the conversation must end with a user turn (or a user turn, then the "
                                   "assistant's answer)", row=i, column=mapping["messages"], line=line)
            prompt = "\n".join(m["content"] for m in messages if m["role"] != "system")
        else:
            messages, completion = None, ""
            prompt = _text(row[mapping["prompt"]], "prompt", i, mapping["prompt"], line)
        values = {role: _text(row[col], role, i, col, line, numbers=role == "answer")
                  for role, col in mapping.items() if role in ("completion", "chosen", "rejected", "answer")}
        completion = values.get("completion", completion)
        reference = completion or values.get("chosen") or values.get("answer", "")
        columns = {k: v for k, v in row.items() if k not in mapped}
        columns["reference"] = reference
        if "answer" in values:
            columns["answer"] = values["answer"]
        if weight == 0:
            continue  # checked like every row, then left out: it counts for nothing
        out.append(Example(prompt=prompt, reference=completion or values.get("chosen", ""),
                           rejected=values.get("rejected", ""), columns=columns, messages=messages, weight=weight))
    if not out:
        raise DatasetError("every row has weight 0: nothing to train on", column=mapping["weight"])
    return out


def content_hash(rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows as canonical JSON lines: the same data gives the same hash whatever file held it."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


class DatasetTask(Task):
    """A user's dataset as a task: its rows mapped to examples, and no gold reward of its own (the run's
    `gold_reward` signal scores it; token-overlap F1 with the reference is the fallback)."""

    description = "A user dataset mapped to roles."

    def __init__(self, spec: DatasetSpec | str | dict):
        self.spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec.of(spec)
        self.raw = read_rows(self.spec)
        self.hash = content_hash(self.raw.rows)
        if self.spec.hash and self.spec.hash != self.hash:
            raise DatasetError(f"the data changed since this version was saved: it hashes {self.hash[:12]}, the run "
                               f"was set up on {self.spec.hash[:12]}; add the new data as a new dataset")
        columns = list(dict.fromkeys(k for row in self.raw.rows[:100] for k in row))
        self.mapping = dict(self.spec.mapping) or guess_mapping(columns)
        try:
            self._examples = to_examples(self.raw, self.mapping)
        except DatasetError as e:
            if self.spec.mapping or e.column is None or e.column != self.mapping.get("weight"):
                raise
            # A guessed "weight" column that holds no weights stays an ordinary column (for the reward signals).
            del self.mapping["weight"]
            self._examples = to_examples(self.raw, self.mapping)
        self.name = f"{Path(self.spec.path).name or self.spec.path}@{self.hash[:12]}"
        self.eval_fraction = self.spec.eval_fraction

    def examples(self) -> list[Example]:
        return self._examples

    def split(self) -> tuple[list[Example], list[Example]]:
        if not hasattr(self, "_split"):
            self._split = super().split()
        return self._split

    def methods(self) -> tuple[str, ...]:
        return methods_for(self.mapping)

    def reward_fn(self):
        from training.rewards.verifiers import TokenF1

        f1 = TokenF1()
        f1.__name__ = "token_f1"
        return f1

    def gold_reward(self, completions, columns):
        return self.reward_fn()(completions, **columns), {}

    def check_method(self, method: str) -> None:
        """Refuse a method the mapping cannot feed, saying which roles it lacks."""
        if method not in self.methods():
            needs = " and ".join(METHOD_NEEDS.get(method, ())) or "prompts"
            raise DatasetError(f"{method} needs {needs}; the mapping {self.mapping} feeds only "
                               f"{', '.join(self.methods()) or 'nothing'}")

    def summary(self) -> dict[str, Any]:
        train, held = self.split()
        return {"path": self.spec.path, "hash": self.hash, "rows": len(self.raw.rows), "train": len(train),
                "eval": len(held), "mapping": self.mapping, "methods": list(self.methods()),
                "weighted": self.weighted(), "weight_zero": len(self.raw.rows) - len(self._examples)}

    def weighted(self) -> bool:
        """Whether some row's weight is not 1: DPO and reward models train on the weights, other methods not."""
        return any(ex.weight != 1.0 for ex in self._examples)
