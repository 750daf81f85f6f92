"""Who takes part in an arena: contestant keys (a run at an evaluation step), the steps with samples, the
step of a run that is rated, and the hash of a run's final weights (runs that hash alike are one model)."""

from __future__ import annotations

import hashlib

from webapp.experiments.models import Experiment, Run, Sample
from webapp.ratings.models import RatingSetup


def sample_steps(experiment: Experiment) -> dict[int, set[int]]:
    """{run id: steps with samples} for the runs that have any."""
    steps: dict[int, set[int]] = {}
    rows = Sample.objects.filter(run__experiment=experiment).values_list("run_id", "step").distinct().order_by()
    for run_id, step in rows:
        steps.setdefault(run_id, set()).add(step)
    return steps


def run_key(run_id: int, step: int) -> str:
    return f"{run_id}@{step}"


def parse_key(key: str) -> tuple[int, int] | None:
    """(run id, step) of a run contestant's key; None for the base model or a malformed key."""
    run, _, step = key.partition("@")
    return (int(run), int(step)) if run.isdigit() and step.isdigit() else None


def pick_step(steps: set[int], what: str, *, total: int, fraction: float | None = None,
              named: int | None = None) -> int | None:
    """The evaluation step of a run that is rated: its last (final), the one nearest `fraction` of its
    `total` steps (ties: the earlier), or the `named` one when it has samples there (else its last)."""
    if not steps:
        return None
    if what == RatingSetup.What.FRACTION and fraction is not None:
        target = fraction * total
        return min(steps, key=lambda s: (abs(s - target), s))
    if what == RatingSetup.What.CHECKPOINT and named in steps:
        return named
    return max(steps)


_HASHES: dict[str, str] = {}  # "<file stamps>" -> sha256, per process (GET never writes, not even a cache file)


def weights_hash(run: Run) -> str | None:
    """sha256 of a finished run's final weights (its model folder's *.safetensors / *.bin), remembered per
    process by the files' names, sizes and times; None when there is no model folder."""
    folder = run.model_dir if run.out_dir else None
    if folder is None or not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        return None
    stamp = ";".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    if stamp not in _HASHES:
        h = hashlib.sha256()
        for p in files:
            with open(p, "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
        _HASHES[stamp] = h.hexdigest()
    return _HASHES[stamp]
