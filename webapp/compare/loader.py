"""The comparison's only door to the database and to its caches: it reads the runs, their series, their
samples and their setups, and turns them into the core's plain input (`core.view.RunData`, rows).

Queries do not grow with the number of runs: one for the runs, one for the stored series of the
finished ones, one for the metric rows of the others, two for the samples shown. A run's series are
downsampled and kept in a small in-process cache; a running run's are brought up to date from the rows
logged since the last request (one writer per run appends in id order, so an id watermark finds them;
a new attempt starts the entry afresh). A finished run's series are stored when it ends (`store_summaries`,
on the experiments app's `runs_ended` signal); a GET reads them, or the rows, and never writes."""

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
from django.http import Http404
from django.urls import reverse

from webapp.compare.core import equal_kl, figures, overopt, sweeps, verdicts, view
from webapp.compare.core.series import NEEDED_NAMES, Series, SeriesData
from webapp.compare.core.view import RunData, Setup
from webapp.compare.models import SeriesSummary
from webapp.experiments.access import experiments_for_user, runs_for_user
from webapp.experiments.methods import METHODS, method_label
from webapp.experiments.models import Experiment, Metric, Run, Sample
from webapp.experiments.references import public_value

log = logging.getLogger(__name__)
TERMINAL = {Run.State.SUCCEEDED, Run.State.FAILED, Run.State.CANCELLED}
MAX_RUNS = 40  # runs in one comparison across experiments

# --- runs ---------------------------------------------------------------------------------------------


def run_order(run: Run) -> tuple:
    """Experiment, then method in the app's order, then seed."""
    method = METHODS.index(run.method) if run.method in METHODS else len(METHODS)
    return run.experiment_id, method, run.method, run.seed, run.pk


def experiment_runs(experiment: Experiment) -> list[Run]:
    """The runs of one experiment, by method (in the app's order) and seed."""
    runs = list(experiment.runs.all())
    for run in runs:
        run.experiment = experiment  # one object: no per-run access to its experiment's columns
    return sorted(runs, key=run_order)


def picked_runs(user, values: list[str]) -> list[Run]:
    """The runs named by `run` parameters (`?run=3&run=7`, or `?run=3,7`; the first MAX_RUNS), their
    experiments in the order picked, each one's runs by method and seed. Http404 if a value is not a
    number or a run is not the user's to see."""
    ids = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                try:
                    ids.append(int(part))
                except ValueError:
                    raise Http404("No such run.") from None
    ids = list(dict.fromkeys(ids))[:MAX_RUNS]
    runs = runs_for_user(user, ids)
    first: dict[int, int] = {}
    for run in sorted(runs, key=lambda r: ids.index(r.pk)):
        first.setdefault(run.experiment_id, len(first))
    return sorted(runs, key=lambda r: (first[r.experiment_id], *run_order(r)[1:]))


def pickable_runs(user) -> list[tuple[Experiment, list[Run]]]:
    """Every run of every experiment the user may see, by experiment (newest first): for the picker."""
    runs = (Run.objects.filter(experiment__in=experiments_for_user(user))
            .select_related("experiment", "experiment__owner").order_by("-experiment__created", "-experiment_id"))
    out: dict[int, tuple[Experiment, list[Run]]] = {}
    for run in runs:
        out.setdefault(run.experiment_id, (run.experiment, []))[1].append(run)
    return [(exp, sorted(rs, key=run_order)) for exp, rs in out.values()]


def labels(runs: list[Run]) -> dict[int, tuple[str, str, str]]:
    """Run id -> (label, group, group label): a method's seeds form a group; across several experiments
    the experiment's name joins the labels and its id the group."""
    several = len({run.experiment_id for run in runs}) > 1
    out = {}
    for run in runs:
        method = method_label(run.method)
        if several:
            out[run.pk] = (f"{run.experiment.name} · {run.label}", f"{run.experiment_id}:{run.method}",
                           f"{method} · {run.experiment.name}")
        else:
            out[run.pk] = (run.label, run.method, method)
    return out


def step_offsets(runs: list[Run]) -> dict[int, int]:
    """Run id -> the last step of the run it starts from (its final step once finished, else its planned
    steps), for the runs that start from another run's model: one query, none without such runs."""
    parents = {run.depends_on_id for run in runs if run.depends_on_id}
    if not parents:
        return {}
    last = {}
    for pk, state, step, config in Run.objects.filter(pk__in=parents).values_list("pk", "state", "step", "config"):
        planned = int(config.get("max_steps", 0) or 0) if isinstance(config, dict) else 0
        last[pk] = step if state == Run.State.SUCCEEDED and step else planned
    return {run.pk: last.get(run.depends_on_id, 0) for run in runs if run.depends_on_id}


def run_data(runs: list[Run], with_series: bool = True, chain: bool = False) -> list[RunData]:
    """The core's view of the runs: labels, groups, colours and (unless `with_series` is false) series;
    with `chain`, each run's step offset (step_offsets)."""
    series = load_series(runs) if with_series else {}
    offsets = step_offsets(runs) if chain else {}
    experiments = list(dict.fromkeys(run.experiment_id for run in runs))
    names = labels(runs)
    out = [RunData(id=run.pk, label=names[run.pk][0], group=names[run.pk][1], group_label=names[run.pk][2],
                   method=run.method, seed=run.seed, state=run.state, active=run.is_active,
                   experiment=experiments.index(run.experiment_id), series=series.get(run.pk, {}),
                   depends_on=bool(run.depends_on_id), offset=offsets.get(run.pk, 0),
                   url=reverse("experiments:run", args=[run.pk]))
           for run in runs]
    return view.style_runs(out)


# --- metric series, cached ---------------------------------------------------------------------------


@dataclass
class Entry:
    """One run's series in the process's cache."""

    attempts: int
    last_id: int = 0
    frozen: bool = False  # loaded after the run had finished: nothing more will arrive
    series: dict[str, Series] = field(default_factory=dict)  # while rows may still arrive
    data: dict[str, SeriesData] | None = None  # once frozen: the final series (stored, or snapshot of `series`)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.series, self.data, self.last_id, self.frozen = {}, None, 0, False

    def snapshot(self) -> dict[str, SeriesData]:
        if self.data is not None:
            return self.data
        return {name: s.snapshot() for name, s in self.series.items()}


_cache: OrderedDict[tuple, Entry] = OrderedDict()
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


def _entry(run: Run) -> Entry:
    key = (run.pk, run.created)  # the creation time too: a database reset that reuses ids is not confused
    with _cache_lock:
        entry = _cache.get(key)
        if entry is None or entry.attempts != run.attempts:
            entry = _cache[key] = Entry(attempts=run.attempts)
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


def _bring_up_to_date(fetch: list[Run], entries: dict[int, Entry]) -> None:
    """Finished runs with nothing cached: from their stored summaries. The others: from their rows."""
    finished = [run for run in fetch if run.state in TERMINAL and entries[run.pk].last_id == 0]
    if finished:
        for run_id, series in SeriesSummary.objects.current(finished).items():
            entry = entries[run_id]
            entry.data, entry.frozen = series, True
        fetch = [run for run in fetch if not entries[run.pk].frozen]
    if fetch:
        _apply_new_rows(fetch, entries)


def _apply_new_rows(fetch: list[Run], entries: dict[int, Entry]) -> None:
    done = {run.pk for run in fetch if run.state in TERMINAL}  # read before the rows: all were written
    fresh = [run.pk for run in fetch if entries[run.pk].last_id == 0]
    conditions = [Q(run_id=run.pk, id__gt=entries[run.pk].last_id) for run in fetch if entries[run.pk].last_id]
    if fresh:
        conditions.append(Q(run_id__in=fresh))
    rows = (Metric.objects.filter(reduce(or_, conditions), name__in=NEEDED_NAMES).order_by()
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
    for run in fetch:
        if run.pk in done:
            entry = entries[run.pk]
            entry.data, entry.series, entry.frozen = entry.snapshot(), {}, True


def store_summaries(run_ids: list[int], **_signal) -> None:
    """Read, downsample and store the series of these runs if they have finished: the receiver of the
    experiments app's `runs_ended` (sent once a run's end has committed). Never raises: a finished run
    without its summary is read from its rows."""
    try:
        runs = [run for run in Run.objects.filter(pk__in=run_ids) if run.state in TERMINAL]
        if runs:
            entries = {run.pk: Entry(attempts=run.attempts) for run in runs}
            _apply_new_rows(runs, entries)
            with transaction.atomic():  # a savepoint inside a caller's transaction: a failure leaves it usable
                SeriesSummary.objects.put({run: entries[run.pk].data for run in runs})
    except Exception:
        log.exception("could not store the series of runs %s", run_ids)


# --- samples and setups -------------------------------------------------------------------------------


def sample_steps(runs: list[Run]) -> dict[int, list[int]]:
    """The evaluation steps with samples, per run, sorted (one query)."""
    pairs = Sample.objects.filter(run_id__in=[r.pk for r in runs]).order_by().values_list("run_id", "step").distinct()
    steps_of: dict[int, list[int]] = {}
    for run_id, step in pairs:
        steps_of.setdefault(run_id, []).append(step)
    for steps in steps_of.values():
        steps.sort()
    return steps_of


def samples_grid(runs: list[Run], step: int | None = None) -> dict:
    """The samples grid (core.view.samples_grid) at `step`: two queries, whatever the number of runs."""
    data = run_data(runs, with_series=False)
    plan = view.grid_plan(data, sample_steps(runs), step)
    wanted = [Q(run_id=run_id, step=s) for run_id, s in plan.wanted()]
    rows = (Sample.objects.filter(reduce(or_, wanted)).order_by("prompt_id", "index")
            .values_list("run_id", "step", "prompt_id", "prompt", "completion", "reward")) if wanted else []
    return view.samples_grid(plan, data, rows)


def verdicts_table(runs: list[Run]) -> dict:
    """The verdicts (core.verdicts) of these runs at each one's latest evaluation, as the page shows
    them: two queries, whatever the number of runs. Across experiments, samples pair on prompt id and text."""
    runs = [run for run in runs if run.trial is None]  # sweep trials: compared by the sweep's table
    steps = sample_steps(runs)
    wanted = [Q(run_id=run_id, step=s[-1]) for run_id, s in steps.items() if s]
    if not wanted:
        return verdicts.table(verdicts.verdicts([]))
    several = len({run.experiment_id for run in runs}) > 1
    query = Sample.objects.filter(reduce(or_, wanted)).order_by()
    if several:
        rows = ((r, s, (pid, prompt), reward) for r, s, pid, prompt, reward
                in query.values_list("run_id", "step", "prompt_id", "prompt", "reward"))
    else:
        rows = query.values_list("run_id", "step", "prompt_id", "reward")
    names = labels(runs)
    result = verdicts.from_samples([(run.pk, *names[run.pk]) for run in runs], rows)
    active = sum(run.is_active for run in runs)
    if active:
        result.notes.insert(0, f"Provisional: {active} run{'s' if active > 1 else ''} still training; "
                               "their latest evaluation is used.")
    return verdicts.table(result)


def statistics(runs: list[Run]) -> dict:
    """What the page shows beside the charts: the summary table, the verdicts, the over-optimisation
    flags and the reward at equal KL (the series read once)."""
    data = run_data(runs)
    return {"summary": view.summary(data), "verdicts": verdicts_table(runs), "flags": overopt.all_flags(data),
            "equal_kl": equal_kl.reward_at_equal_kl(data), "sweep": sweep_table(runs, data)}


def sweep_table(runs: list[Run], data: list[RunData]) -> dict | None:
    """The sweep's table (core.sweeps) of the runs that are sweep trials; None if none is (one query)."""
    from webapp.experiments.actions import was_pruned
    from webapp.experiments.sweeps import SEARCH_SPACES

    trials = [(run, d) for run, d in zip(runs, data, strict=True) if run.trial is not None]
    if not trials:
        return None
    summaries = {d.id: view.run_summary(d) for _, d in trials}
    items = []
    for run, d in trials:
        names = [p.name for p in SEARCH_SPACES.get(run.method, ())]
        s = summaries[d.id]
        items.append(sweeps.TrialRun(run=run.pk, group=d.group, group_label=d.group_label, label=d.label,
                                     params={k: run.config[k] for k in names if k in run.config},
                                     state="pruned" if was_pruned(run) else run.state, wall_s=s.wall_s, steps=s.last_step, tokens=s.tokens))
    rows = Sample.objects.filter(run_id__in=[run.pk for run, _ in trials]).order_by().values_list(
        "run_id", "step", "prompt_id", "reward")
    return sweeps.view(sweeps.sweep_table(items, rows))


def run_flags(runs: list[Run]) -> list[str]:
    """Over-optimisation (gold and training reward parting) and entropy collapse, per run (core.overopt)."""
    return overopt.all_flags(run_data(runs))


def comparability_warnings(runs: list[Run]) -> list[str]:
    """core.view.comparability_warnings of these runs (one query, none for a single experiment)."""
    if len({run.experiment_id for run in runs}) < 2:
        return []
    prompts: dict[int, set] = {}
    rows = Sample.objects.filter(run_id__in=[r.pk for r in runs], step=0, index=0).order_by()
    for run_id, prompt_id, prompt in rows.values_list("run_id", "prompt_id", "prompt"):
        prompts.setdefault(run_id, set()).add((prompt_id, prompt))
    setups = []
    for r in runs:
        task = r.experiment.task_label or str(r.config.get("task", ""))
        setups.append(Setup(
            run=r.pk, experiment=r.experiment_id, experiment_name=r.experiment.name, task=task,
            eval_prompts=str(r.config.get("eval_prompts", r.experiment.eval_prompts)),
            model=str(public_value(r.config.get("model", r.experiment.base_model))),  # never an artifact path
            generation=f"{r.config.get('eval_samples')} samples per prompt, {r.config.get('max_new_tokens')} new tokens"))
    return view.comparability_warnings(setups, prompts)


# --- what the page and its JSON endpoint send ---------------------------------------------------------


def figures_payload(runs: list[Run], x: str = "step", smoothing: float = 0.0, chain: bool = False) -> dict:
    data = run_data(runs, chain=chain)
    out = {
        "x": x, "smoothing": smoothing, "active": any(r.active for r in data),
        "figures": figures.build_figures(data, x=x, smoothing=smoothing, chain=chain),
        "summary": view.summary(data),
        "sample_steps": sorted({s for steps in sample_steps(runs).values() for s in steps}),
        "runs": [{"id": r.pk, "state": r.state, "step": r.step, "total": r.total or r.config.get("max_steps", 0)}
                 for r in runs],
    }
    if chain:
        out["chain"] = True
    return out


def figures_json(runs: list[Run], x: str = "step", smoothing: float = 0.0, chain: bool = False) -> bytes:
    """figures_payload as JSON. When every run has finished nothing can change any more: the bytes
    are kept (a few comparisons' worth) and sent again as they are."""
    key = None
    if runs and all(run.state in TERMINAL for run in runs):
        key = (tuple((r.pk, r.created, r.attempts, r.state) for r in runs), x, smoothing, chain)
        with _cache_lock:
            body = _payloads.get(key)
            if body is not None:
                _payloads.move_to_end(key)
                return body
    body = json.dumps(figures_payload(runs, x, smoothing, chain), separators=(",", ":")).encode()
    if key is not None:
        with _cache_lock:
            _payloads[key] = body
            while len(_payloads) > PAYLOADS:
                _payloads.popitem(last=False)
    return body


def run_figures_payload(run: Run) -> dict:
    """A run's own page: its four charts (core.figures.run_figures), from the same cached series."""
    return {"figures": figures.run_figures(run_data([run])), "active": run.is_active}


def summary(runs: list[Run]) -> dict:
    """The summary table (core.view.summary) of these runs."""
    return view.summary(run_data(runs))


def store_missing_summaries(batch: int = 20) -> int:
    """store_summaries for every finished run without a current summary; returns how many it stored (a failure is logged)."""
    runs = list(Run.objects.filter(state__in=TERMINAL).order_by("pk"))
    have = SeriesSummary.objects.current(runs)
    missing = [run.pk for run in runs if run.pk not in have]
    for k in range(0, len(missing), batch):
        store_summaries(missing[k:k + batch])
    return len(missing)
