"""The comparison's queries. Their number does not grow with the number of runs compared: one query
for the runs, one for the stored series of the finished ones, one for the metric rows of the others,
two for the samples shown.

Metric series are long (5,000 steps x 20 names per run is not unusual) while a chart needs a few
hundred points per line. So each run's series are downsampled (figures.Series) and kept in a small
in-process cache. A finished run's downsampled series are stored in the database when it finishes
(models.SeriesSummary, `store_summaries`): the first view reads those, not its metric rows. A finished
run without one (it finished before summaries were stored, or storing failed) is read from its rows,
and its summary stored then. A running run's series are downsampled as rows arrive: a later request
(the page polls every few seconds while runs train) fetches only the rows logged since. One writer per
run appends its rows in id order, so a per-run id watermark finds exactly the new rows; a new attempt
(a resumed run rewrites its steps after the checkpoint) starts the run's entry afresh.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.urls import reverse

from webapp.compare import figures
from webapp.compare.figures import RunData, Series, SeriesData
from webapp.compare.models import SeriesSummary
from webapp.experiments.models import METHOD_LABELS, METHODS, Experiment, Metric, Run, Sample

log = logging.getLogger(__name__)
NAMES = figures.NEEDED_NAMES
TERMINAL = {Run.State.SUCCEEDED, Run.State.FAILED, Run.State.CANCELLED}

# --- runs ---------------------------------------------------------------------------------------------


def _order(run: Run) -> tuple:
    method = METHODS.index(run.method) if run.method in METHODS else len(METHODS)
    return run.experiment_id, method, run.method, run.seed, run.pk


def experiment_runs(experiment: Experiment) -> list[Run]:
    """The runs of one experiment, by method (in the app's order) and seed."""
    runs = list(experiment.runs.all())
    for run in runs:
        run.experiment = experiment  # one object: no per-run access to its experiment's columns
    return sorted(runs, key=_order)


def visible_runs(user, ids: list[int]) -> list[Run]:
    """The runs with these ids in experiments the user may see (any other id is simply not returned)."""
    visible = Experiment.objects.visible_to(user)
    runs = Run.objects.filter(pk__in=ids, experiment__in=visible).select_related("experiment")
    by_experiment = {}
    for run in runs:
        by_experiment.setdefault(run.experiment_id, []).append(run)
    order = list(dict.fromkeys(run_id for run_id in ids))  # experiments in the order their runs were picked
    first = {exp: min(order.index(r.pk) for r in rs) for exp, rs in by_experiment.items()}
    return sorted(runs, key=lambda r: (first[r.experiment_id], *_order(r)[1:]))


def pickable_runs(user) -> list[tuple[Experiment, list[Run]]]:
    """Every run of every experiment the user may see, by experiment (newest first): for the picker."""
    runs = (Run.objects.filter(experiment__in=Experiment.objects.visible_to(user))
            .select_related("experiment", "experiment__owner").order_by("-experiment__created", "-experiment_id"))
    out: dict[int, tuple[Experiment, list[Run]]] = {}
    for run in runs:
        out.setdefault(run.experiment_id, (run.experiment, []))[1].append(run)
    return [(exp, sorted(rs, key=_order)) for exp, rs in out.values()]


# --- metric series, cached ---------------------------------------------------------------------------


@dataclass
class _Entry:
    attempts: int
    last_id: int = 0
    frozen: bool = False  # loaded after the run had finished: nothing more will arrive
    series: dict[str, Series] = field(default_factory=dict)  # while rows may still arrive
    data: dict[str, SeriesData] | None = None  # once frozen: the final series (stored, or snapshot of `series`)
    read_in_full: bool = False  # frozen by one read of all its rows (not a stored summary, not polls)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.series, self.data, self.last_id, self.frozen, self.read_in_full = {}, None, 0, False, False

    def snapshot(self) -> dict[str, SeriesData]:
        if self.data is not None:
            return self.data
        return {name: s.snapshot() for name, s in self.series.items()}


_cache: OrderedDict[tuple, _Entry] = OrderedDict()
_payloads: OrderedDict[tuple, bytes] = OrderedDict()  # serialized figures of finished runs
PAYLOADS = 16
_cache_lock = threading.Lock()


def cache_size() -> int:
    """Runs kept. An entry holds at most ~500 points per series: under 1 MB for a run of thousands
    of steps logging every panel's metrics, a few kB for a short one."""
    return getattr(settings, "PTLAB_COMPARE_CACHE_RUNS", 64)


def clear_cache(series: bool = True) -> None:
    """Forget the cached serialized figures and (unless `series` is false) the cached series."""
    with _cache_lock:
        if series:
            _cache.clear()
        _payloads.clear()


def _entry(run: Run) -> _Entry:
    key = (run.pk, run.created)  # the creation time too: a database reset that reuses ids is not confused
    with _cache_lock:
        entry = _cache.get(key)
        if entry is None or entry.attempts != run.attempts:
            entry = _cache[key] = _Entry(attempts=run.attempts)
        _cache.move_to_end(key)
        while len(_cache) > cache_size():
            _cache.popitem(last=False)
    return entry


def load_series(runs: list[Run]) -> dict[int, dict[str, SeriesData]]:
    """Each run's series of the names the figures need, downsampled: {run id: {name: SeriesData}}.
    At most two queries whatever the number of runs: the stored summaries of the finished runs not
    cached yet, the rows logged since the last call of the others; none when every run had finished
    by the last call."""
    entries = {run.pk: _entry(run) for run in runs}
    fetch = sorted((run for run in runs if not entries[run.pk].frozen), key=lambda r: r.pk)
    held = []
    try:
        # Lock in id order (no deadlock): a concurrent request for the same runs waits, then finds the
        # rows applied and fetches only what came after.
        for run in fetch:
            entries[run.pk].lock.acquire()
            held.append(entries[run.pk])
        fetch = [run for run in fetch if not entries[run.pk].frozen]
        if fetch:
            try:
                _bring_up_to_date(fetch, entries)
            except BaseException:
                for run in fetch:  # rows arrive in no particular order: a partial read starts afresh
                    entries[run.pk].reset()
                raise
    finally:
        for entry in held:
            entry.lock.release()
    out = {}
    for run in runs:
        entry = entries[run.pk]
        with entry.lock:
            out[run.pk] = entry.snapshot()
    return out


def _bring_up_to_date(fetch: list[Run], entries: dict[int, _Entry]) -> None:
    """Finished runs with nothing cached: from their stored summaries. The others: from their rows. A
    finished run read from all its rows gets its summary stored, so the next cold view need not."""
    finished = [run for run in fetch if run.state in TERMINAL and entries[run.pk].last_id == 0]
    if finished:
        for run_id, series in SeriesSummary.objects.current(finished).items():
            entry = entries[run_id]
            entry.data, entry.frozen = series, True
        fetch = [run for run in fetch if not entries[run.pk].frozen]
    if fetch:
        _apply_new_rows(fetch, entries)
        _store([run for run in fetch if entries[run.pk].read_in_full], entries)


def _apply_new_rows(fetch: list[Run], entries: dict[int, _Entry]) -> None:
    done = {run.pk for run in fetch if run.state in TERMINAL}  # read before the rows: all were written
    fresh = [run.pk for run in fetch if entries[run.pk].last_id == 0]
    conditions = [Q(run_id=run.pk, id__gt=entries[run.pk].last_id) for run in fetch if entries[run.pk].last_id]
    if fresh:
        conditions.append(Q(run_id__in=fresh))
    rows = (Metric.objects.filter(reduce(or_, conditions), name__in=NAMES).order_by()
            .values_list("run_id", "id", "name", "step", "value", "wall_time"))
    current, entry, series_of = None, None, {}
    for run_id, pk, name, step, value, wall in rows.iterator(chunk_size=5000):  # streamed: no list of rows
        if run_id != current:
            current, entry = run_id, entries[run_id]
            series_of = entry.series
        series = series_of.get(name)
        if series is None:
            series = series_of[name] = Series()
        series.add(step, value, wall)
        if pk > entry.last_id:
            entry.last_id = pk
    fresh = set(fresh)
    for run in fetch:
        if run.pk in done:
            entry = entries[run.pk]
            entry.data, entry.series, entry.frozen = entry.snapshot(), {}, True
            entry.read_in_full = run.pk in fresh


def _store(runs: list[Run], entries: dict[int, _Entry]) -> None:
    """Store the frozen series of these finished runs. A failure (a locked database) only costs the
    next cold view a read of the rows: it is logged, never raised."""
    if not runs:
        return
    try:
        with transaction.atomic():  # a savepoint inside a request's transaction: a failure leaves it usable
            SeriesSummary.objects.put({run: entries[run.pk].data for run in runs})
    except Exception:
        log.warning("could not store the series of runs %s", [run.pk for run in runs], exc_info=True)


def store_summaries(run_ids: list[int]) -> None:
    """Read, downsample and store the series of these runs if they have finished (a run's end calls
    this once committed: webapp.experiments.actions). Never raises: a finished run without its
    summary is read from its rows on its next view, and its summary stored then."""
    try:
        runs = [run for run in Run.objects.filter(pk__in=run_ids) if run.state in TERMINAL]
        if runs:
            entries = {run.pk: _Entry(attempts=run.attempts) for run in runs}
            _apply_new_rows(runs, entries)
            _store(runs, entries)
    except Exception:
        log.exception("could not store the series of runs %s", run_ids)


def run_data(runs: list[Run], with_series: bool = True) -> list[RunData]:
    """The figures' view of the runs: labels, groups (a method's seeds; per experiment when several
    are compared), colours and (unless `with_series` is false) series."""
    series = load_series(runs) if with_series else {}
    experiments = list(dict.fromkeys(run.experiment_id for run in runs))
    several = len(experiments) > 1
    out = []
    for run in runs:
        method = METHOD_LABELS.get(run.method, run.method)
        out.append(RunData(
            id=run.pk, label=_label(run, several),
            group=f"{run.experiment_id}:{run.method}" if several else run.method,
            group_label=f"{method} · {run.experiment.name}" if several else method,
            method=run.method, seed=run.seed, state=run.state, active=run.is_active,
            experiment=experiments.index(run.experiment_id), series=series.get(run.pk, {})))
    return figures.style_runs(out)


def _sample_steps(runs: list[Run]) -> dict[int, list[int]]:
    """The evaluation steps with samples, per run (one query)."""
    pairs = Sample.objects.filter(run_id__in=[r.pk for r in runs]).order_by().values_list("run_id", "step").distinct()
    steps_of: dict[int, list[int]] = {}
    for run_id, step in pairs:
        steps_of.setdefault(run_id, []).append(step)
    for steps in steps_of.values():
        steps.sort()
    return steps_of


def _label(run: Run, several: bool) -> str:
    return f"{run.experiment.name} · {run.label}" if several else run.label


# --- what the page and its JSON endpoint send ---------------------------------------------------------


def figures_payload(runs: list[Run], x: str = "step", smoothing: float = 0.0) -> dict:
    data = run_data(runs)
    return {
        "x": x, "smoothing": smoothing, "active": any(r.active for r in data),
        "figures": figures.build_figures(data, x=x, smoothing=smoothing),
        "summary": figures.summary(data),
        "sample_steps": sorted({s for steps in _sample_steps(runs).values() for s in steps}),
        "runs": [{"id": r.pk, "state": r.state, "step": r.step, "total": r.total or r.config.get("max_steps", 0)}
                 for r in runs],
    }


def figures_json(runs: list[Run], x: str = "step", smoothing: float = 0.0) -> bytes:
    """figures_payload as JSON. When every run has finished nothing can change any more: the bytes
    are kept (a few comparisons' worth) and sent again as they are."""
    key = None
    if runs and all(run.state in TERMINAL for run in runs):
        key = (tuple((r.pk, r.created, r.attempts, r.state) for r in runs), x, smoothing)
        with _cache_lock:
            body = _payloads.get(key)
            if body is not None:
                _payloads.move_to_end(key)
                return body
    body = json.dumps(figures_payload(runs, x, smoothing), separators=(",", ":")).encode()
    if key is not None:
        with _cache_lock:
            _payloads[key] = body
            while len(_payloads) > PAYLOADS:
                _payloads.popitem(last=False)
    return body


def summary_payload(runs: list[Run]) -> tuple[list[RunData], dict]:
    data = run_data(runs)
    return data, figures.summary(data)


# --- samples -----------------------------------------------------------------------------------------


def samples_grid(runs: list[Run], step: int | None = None) -> dict:
    """Completions side by side: eval prompts down, one column for the base model (step 0 of a run
    that starts from it) and one per run, at the evaluation `step` (default: the last). A run with no
    evaluation at that step shows its latest one before it. Two queries, whatever the number of runs.
    Completions are untrusted text: the template and the script both show them as text only."""
    steps_of = _sample_steps(runs)
    steps = sorted({s for ss in steps_of.values() for s in ss})
    if not steps:
        return {"steps": [], "step": None, "columns": [], "prompts": []}
    chosen = steps[-1] if step is None else max([s for s in steps if s <= step] or steps[:1])
    shown = {}
    for run in runs:
        before = [s for s in steps_of.get(run.pk, []) if s <= chosen]
        if before:
            shown[run.pk] = before[-1]
    base = next((run for run in runs if not run.depends_on_id and 0 in steps_of.get(run.pk, [])), None)
    base = base or next((run for run in runs if 0 in steps_of.get(run.pk, [])), None)
    wanted = [Q(run_id=run_id, step=s) for run_id, s in shown.items()]
    if base is not None:
        wanted.append(Q(run_id=base.pk, step=0))
    rows = (Sample.objects.filter(reduce(or_, wanted)).order_by("prompt_id", "index")
            .values_list("run_id", "step", "prompt_id", "index", "prompt", "completion", "reward")) if wanted else []
    cells: dict[tuple, list] = {}
    prompts: dict[int, str] = {}
    for run_id, s, prompt_id, _index, prompt, completion, reward in rows:
        prompts.setdefault(prompt_id, prompt)
        if base is not None and run_id == base.pk and s == 0:
            cells.setdefault(("base", prompt_id), []).append({"completion": completion, "reward": reward})
        if shown.get(run_id) == s:
            cells.setdefault((run_id, prompt_id), []).append({"completion": completion, "reward": reward})
    several = len({run.experiment_id for run in runs}) > 1
    columns = []
    if base is not None:
        columns.append({"key": "base", "label": "Base model", "note": f"step 0 of {_label(base, several)}",
                        "run": None, "step": 0, "color": "#495057"})
    colors = {r.id: r.color for r in run_data(runs, with_series=False)}
    for run in runs:
        s = shown.get(run.pk)
        note = "no evaluation yet" if s is None else (f"step {s}" if s == chosen else f"step {s} (latest by then)")
        columns.append({"key": run.pk, "label": _label(run, several), "note": note, "run": run.pk, "step": s,
                        "color": colors[run.pk], "url": reverse("experiments:run", args=[run.pk])})
    return {
        "steps": steps, "step": chosen, "columns": columns,
        "prompts": [{"id": pid, "prompt": text, "cells": [cells.get((c["key"], pid), []) for c in columns]}
                    for pid, text in sorted(prompts.items())],
    }


# --- can these runs be compared? --------------------------------------------------------------------


def comparability_warnings(runs: list[Run]) -> list[str]:
    """Why runs from several experiments may not be comparable: different eval prompts (the step-0
    samples' prompt texts, else the task and prompt count), gold reward (task), base model (KL is
    measured from it) or generation settings. One query."""
    if len({run.experiment_id for run in runs}) < 2:
        return []
    prompts: dict[int, set] = {}
    rows = Sample.objects.filter(run_id__in=[r.pk for r in runs], step=0, index=0).order_by()
    for run_id, prompt_id, prompt in rows.values_list("run_id", "prompt_id", "prompt"):
        prompts.setdefault(run_id, set()).add((prompt_id, prompt))
    warnings = []

    def differ(values: dict) -> bool:
        return len(set(values.values())) > 1

    def which(values: dict, show: bool = True) -> str:
        by_value: dict = {}
        for run in runs:
            if run.pk in values:
                by_value.setdefault(values[run.pk], []).append(run.experiment.name)
        return " vs ".join(", ".join(dict.fromkeys(names)) + (f" ({value})" if show else "")
                           for value, names in by_value.items())

    tasks = {r.pk: r.experiment.task_label or str(r.config.get("task", "")) for r in runs}
    if differ(tasks):
        warnings.append(f"The gold rewards differ (different tasks): {which(tasks)}. "
                        "Rewards are not on one scale.")
    seen = {r.pk: frozenset(prompts[r.pk]) for r in runs if r.pk in prompts}
    configured = {r.pk: f"{r.config.get('eval_prompts', r.experiment.eval_prompts)} prompts of {tasks[r.pk]}"
                  for r in runs}
    if differ(seen):
        warnings.append(f"The eval prompt sets differ: {which(seen, show=False)}. "
                        "Rewards and samples are not of the same prompts.")
    elif differ(configured):
        warnings.append(f"The eval prompt sets differ: {which(configured)}. "
                        "Rewards and samples are not of the same prompts.")
    models = {r.pk: str(r.config.get("model", r.experiment.base_model)) for r in runs}
    if differ(models):
        warnings.append(f"The base models differ: {which(models)}. KL is measured from different references.")
    gen = {r.pk: f"{r.config.get('eval_samples')} samples per prompt, {r.config.get('max_new_tokens')} new tokens"
           for r in runs}
    if differ(gen):
        warnings.append(f"The evaluation settings differ: {which(gen)}.")
    return warnings
