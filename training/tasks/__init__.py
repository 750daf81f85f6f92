"""Built-in tasks, the JSONL loader and users' datasets (files, saved folders, hub ids) mapped to roles."""

from __future__ import annotations

from training.tasks.arithmetic import Arithmetic
from training.tasks.base import Example, Task
from training.tasks.dataset import DatasetError, DatasetSpec, DatasetTask, guess_mapping, methods_for
from training.tasks.format import Format
from training.tasks.jsonl import JSONLError, JSONLTask, parse_jsonl
from training.tasks.sentiment import Sentiment
from training.tasks.word_problems import WordProblems

BUILTIN_TASKS: dict[str, Task] = {t.name: t for t in (Arithmetic(), Sentiment(), Format(), WordProblems())}

__all__ = ["BUILTIN_TASKS", "DatasetError", "DatasetSpec", "DatasetTask", "Example", "JSONLError", "JSONLTask",
           "Task", "get_task", "eval_task_for", "guess_mapping", "methods_for", "parse_jsonl", "task_for"]


def get_task(name: str) -> Task:
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    if name.endswith(".jsonl"):
        return JSONLTask(name)
    raise ValueError(f"unknown task {name!r}: use one of {', '.join(BUILTIN_TASKS)} or a .jsonl file")


def eval_task_for(cfg) -> Task | None:
    """The task the uniform evaluation draws from when the config names one apart (`eval_task`)."""
    spec = getattr(cfg, "eval_task", "")
    if not spec:
        return None
    return DatasetTask(spec) if isinstance(spec, dict) else get_task(spec)


def task_for(cfg) -> Task:
    """The run's data: its `dataset` when the config names one (checked against the method), else its task."""
    if getattr(cfg, "dataset", ""):
        task = DatasetTask(cfg.dataset)
        task.check_method(cfg.method)
        return task
    return get_task(cfg.task)
