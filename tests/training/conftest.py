from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class MemorySink:
    """A MetricSink that keeps everything in lists; `stop_at` requests a stop once that step is reached."""

    def __init__(self, stop_at: int | None = None):
        self.metrics: list[tuple[int, dict]] = []
        self.samples = []
        self.progress_events = []
        self.stop_at = stop_at
        self.truncated_at: int | None = None

    def log_metrics(self, step, metrics):
        self.metrics.append((step, dict(metrics)))

    def log_samples(self, step, samples):
        self.samples.extend(samples)

    def progress(self, progress):
        self.progress_events.append(progress)

    def should_stop(self):
        return self.stop_at is not None and any(p.step >= self.stop_at for p in self.progress_events)

    def truncate_after(self, step):
        self.truncated_at = step
        self.metrics = [(s, m) for s, m in self.metrics if s <= step]
        self.samples = [s for s in self.samples if s.step <= step]

    def keys(self) -> set[str]:
        return {k for _, m in self.metrics for k in m}

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(s, m[name]) for s, m in self.metrics if name in m]


@pytest.fixture
def memory_sink():
    return MemorySink()


# Small enough that every method trains in seconds on 2 CPU cores.
FAST = {"max_steps": 3, "eval_every": 2, "eval_prompts": 3, "eval_samples": 2, "max_new_tokens": 8, "batch_size": 4}


@pytest.fixture(scope="session")
def tiny_path():
    from training.models import build_tiny

    return build_tiny()
