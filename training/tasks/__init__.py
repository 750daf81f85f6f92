"""Built-in tasks and the JSONL loader."""

from __future__ import annotations

from training.tasks.arithmetic import Arithmetic
from training.tasks.base import Example, Task
from training.tasks.format import Format
from training.tasks.jsonl import JSONLError, JSONLTask, parse_jsonl
from training.tasks.sentiment import Sentiment

BUILTIN_TASKS: dict[str, Task] = {t.name: t for t in (Arithmetic(), Sentiment(), Format())}

__all__ = ["BUILTIN_TASKS", "Example", "JSONLError", "JSONLTask", "Task", "get_task", "parse_jsonl"]


def get_task(name: str) -> Task:
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    if name.endswith(".jsonl"):
        return JSONLTask(name)
    raise ValueError(f"unknown task {name!r}: use one of {', '.join(BUILTIN_TASKS)} or a .jsonl file")
