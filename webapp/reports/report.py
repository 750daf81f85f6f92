"""The report of an experiment: one plain, JSON-able document (`build_report`) that every format is
made from (HTML, PDF, CSV, JSON, Markdown) and that `import_report` turns back into an experiment.

Runs are named in the document by a key that does not depend on database ids (`sft-s0`: method and
seed), so votes, dependencies and the leaderboard survive an export to another installation. Export,
import and export again give the same document apart from `id` fields and `exported_at`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import os
import platform
import subprocess
from collections import Counter

from django.conf import settings
from django.utils import timezone

from webapp.compare.core import verdicts
from webapp.compare.loader import labels
from webapp.experiments.methods import method_label
from webapp.experiments.models import Experiment, Metric, Run, Sample, Worker
from webapp.experiments.references import public_config, public_text, public_value
from webapp.ratings.leaderboard import as_json, build_leaderboard
from webapp.ratings.models import BASE, Vote

FORMAT = "ptlab-report"
VERSION = 1
EXPERIMENT_FIELDS = Experiment.SETTINGS
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "Django", "celery", "plotly")
IMPORTED_RATER = "~"  # prefix of the inactive users that hold imported votes (not a valid username in forms)


def run_keys(runs: list[Run]) -> dict[int, str]:
    """A name for each run that holds in any installation: method and seed (`dpo-s1`)."""
    keys, seen = {}, Counter()
    for run in runs:
        key = f"{run.method}-s{run.seed}"
        seen[key] += 1
        keys[run.pk] = key if seen[key] == 1 else f"{key}-{seen[key]}"
    return keys


def rater_name(user) -> str:
    name = user.get_username()
    return name[len(IMPORTED_RATER):] if name.startswith(IMPORTED_RATER) and not user.is_active else name


def _finite(x):
    return x if x is None or not isinstance(x, float) or math.isfinite(x) else None


def _iso(dt) -> str | None:
    return dt.isoformat() if dt else None


@functools.cache
def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=settings.BASE_DIR,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip() or None
    return f"{rev}{' (modified)' if dirty.stdout.strip() else ''}" if rev else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def environment(runs: list[Run]) -> dict:
    """Where the report was made and where the runs trained: package versions, code revision, this
    machine, and the workers that claimed the runs (their GPU, as they reported it)."""
    hosts = sorted({r.claimed_by for r in runs if r.claimed_by})
    workers = {w.hostname: w for w in Worker.objects.filter(hostname__in=hosts)}
    return {
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "git_revision": _git_revision(),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "memory_gb": _memory_gb()},
        "workers": [{"hostname": h, "gpu": workers[h].gpu if h in workers else None,
                     "gpu_memory_mb": workers[h].gpu_memory_mb if h in workers else None} for h in hosts],
    }


def _duration(run: Run) -> float | None:
    if run.started_at and run.finished_at:
        return round((run.finished_at - run.started_at).total_seconds(), 3)
    return None


def _run_rows(runs: list[Run], keys: dict[int, str], labels: dict[int, tuple[str, str, str]]) -> dict:
    """Runs, metrics and samples of the document. `labels`: run id -> (label, group, group label)."""
    ids = [r.pk for r in runs]
    metrics: dict[str, list] = {keys[r.pk]: [] for r in runs}
    rows = (Metric.objects.filter(run_id__in=ids).order_by("run_id", "name", "step", "id")
            .values_list("run_id", "step", "name", "value", "wall_time"))
    for run_id, step, name, value, wall in rows.iterator(chunk_size=5000):
        metrics[keys[run_id]].append([step, name, _finite(value), wall])

    samples: dict[str, list] = {keys[r.pk]: [] for r in runs}
    rows = (Sample.objects.filter(run_id__in=ids).order_by("run_id", "step", "prompt_id", "index")
            .values_list("run_id", "step", "prompt_id", "index", "prompt", "completion", "reward"))
    for run_id, step, prompt_id, index, prompt, completion, reward in rows.iterator(chunk_size=2000):
        samples[keys[run_id]].append([step, prompt_id, index, prompt, completion, _finite(reward)])
    return {
        "runs": [{
            "id": r.pk, "key": keys[r.pk], "method": r.method, "method_label": method_label(r.method),
            "seed": r.seed, "label": labels[r.pk][0], "group": labels[r.pk][1], "group_label": labels[r.pk][2],
            "state": r.state, "config": public_config(r.config),
            "depends_on": keys.get(r.depends_on_id), "step": r.step, "total": r.total, "latest": r.latest,
            "error": public_text(r.error), "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at),
            "duration_s": _duration(r), "claimed_by": r.claimed_by,
            **({"trial": r.trial} if r.trial is not None else {}),  # a sweep trial
        } for r in runs],
        "metrics": metrics,
        "samples": samples,
    }


def build_report(experiment: Experiment, *, votes: bool = True) -> dict:
    """Everything needed to show the comparison again, as plain data (see the module's docstring).
    Queries: a handful, whatever the number of runs (metrics and samples are streamed)."""
    from webapp.reports.models import ImportedReport

    runs = list(experiment.runs.order_by("id"))
    keys = run_keys(runs)
    imported = ImportedReport.objects.filter(experiment=experiment).first()
    parts = _run_rows(runs, keys, labels(runs))

    vote_rows = []
    if votes or imported:
        names = {}
        for v in Vote.objects.filter(experiment=experiment).select_related("rater").order_by("updated", "id"):
            names.setdefault(v.rater_id, rater_name(v.rater))
            vote_rows.append(_vote_row(v, names[v.rater_id], keys))

    leaderboard = None
    if imported and imported.votes_digest and imported.votes_digest == votes_digest(vote_rows):
        leaderboard = imported.leaderboard  # the same votes: the same board as where they were cast
    exp = {f: getattr(experiment, f) for f in EXPERIMENT_FIELDS}
    exp["base_model"] = public_value(exp["base_model"])
    exp["hyperparams"] = {m: public_config(p) for m, p in exp["hyperparams"].items()}
    exp.update({"id": experiment.pk, "task_label": experiment.task_label, "created": _iso(experiment.created)})
    return {
        "format": FORMAT, "version": VERSION, "exported_at": timezone.now().isoformat(),
        "experiment": exp,
        **parts,
        "verdicts": verdicts_document(parts),
        **({"sweep": sweep} if (sweep := sweep_document(parts)) else {}),
        "votes": vote_rows,
        "leaderboard": leaderboard or leaderboard_document(build_leaderboard(experiment), keys),
        "environment": imported.environment if imported else environment(runs),
    }


EMPTY_BOARD = {"step": None, "both_bad": "tie", "votes": 0, "bootstrap_rounds": 0, "rows": [], "labels": [],
               "win_rate": [], "pair_votes": [], "raters": [], "agreement": None,
               "position_bias": {"left": 0, "right": 0, "share_left": None}, "kendall_tau": None,
               "human_reward_disagree": False, "base_contestant": BASE}


def build_comparison_report(runs: list[Run]) -> dict:
    """The report of runs picked from several experiments (the /compare/?run=... page): the same
    document, its `experiment` a summary of theirs (`experiments` lists them). Votes belong to one
    experiment's arena: a comparison across experiments has none, and no leaderboard."""
    experiments = list({r.experiment_id: r.experiment for r in runs}.values())
    if len(experiments) == 1:
        keys = run_keys(runs)
    else:
        index = {e.pk: n + 1 for n, e in enumerate(experiments)}
        keys = {r.pk: f"e{index[r.experiment_id]}-{r.method}-s{r.seed}" for r in runs}
        if len(set(keys.values())) < len(keys):
            keys = {r.pk: f"{keys[r.pk]}-r{n}" for n, r in enumerate(runs)}

    def joined(values) -> str:
        return ", ".join(dict.fromkeys(str(v) for v in values))

    first = experiments[0] if experiments else None
    parts = _run_rows(runs, keys, labels(runs))
    exp = {
        "id": None, "name": ("Comparison: " + " vs ".join(e.name for e in experiments))[:200],
        "base_model": joined(public_value(e.base_model) for e in experiments)[:500], "task": joined(e.task for e in experiments)[:100],
        "methods": list(dict.fromkeys(r.method for r in runs)), "seeds": max((e.seeds for e in experiments), default=1),
        "max_steps": max((e.max_steps for e in experiments), default=0),
        "eval_every": first.eval_every if first else 0, "eval_prompts": first.eval_prompts if first else 0,
        "eval_samples": first.eval_samples if first else 0, "max_new_tokens": first.max_new_tokens if first else 0,
        "hyperparams": {}, "rl_from_sft": False, "queue": first.queue if first else "train",
        "task_label": joined(e.task_label for e in experiments), "created": None,
    }
    return {
        "format": FORMAT, "version": VERSION, "exported_at": timezone.now().isoformat(),
        "experiment": exp,
        "experiments": [{"id": e.pk, "name": e.name, "base_model": public_value(e.base_model),
                         "task_label": e.task_label}
                        for e in experiments],
        **parts,
        "verdicts": verdicts_document(parts, several=len(experiments) > 1),
        "votes": [],
        "leaderboard": dict(EMPTY_BOARD),
        "environment": environment(runs),
    }


def verdicts_document(parts: dict, several: bool = False) -> dict:
    """The verdicts (compare.core.verdicts) of the document's runs from its samples, at each run's last
    evaluation. Derived, like the leaderboard: shown, not imported. Across experiments, samples pair on
    prompt id and text."""
    runs = [(n, r["label"], r.get("group", r["method"]), r.get("group_label", r["method_label"]))
            for n, r in enumerate(parts["runs"]) if r.get("trial") is None]  # sweep trials: see sweep_document
    rows = ((n, step, (pid, prompt) if several else pid, reward)
            for n, r in enumerate(parts["runs"])
            for step, pid, _index, prompt, _completion, reward in parts["samples"].get(r["key"], []))
    return verdicts.from_samples(runs, rows).as_dict()


def sweep_document(parts: dict) -> dict | None:
    """The sweep's best-of-budget table (compare.core.sweeps) of the document's trial runs; None if none."""
    from webapp.compare.core import sweeps
    from webapp.experiments.sweeps import SEARCH_SPACES

    trials = []
    for n, r in enumerate(parts["runs"]):
        if r.get("trial") is None:
            continue
        names = [p.name for p in SEARCH_SPACES.get(r["method"], ())]
        trials.append(sweeps.TrialRun(run=n, group=r.get("group", r["method"]),
                                      group_label=r.get("group_label", r["method_label"]), label=r["label"],
                                      params={k: r["config"][k] for k in names if k in r["config"]},
                                      state=r["state"], wall_s=r.get("duration_s"), steps=r.get("step")))
    if not trials:
        return None
    rows = ((n, step, pid, reward) for n, r in enumerate(parts["runs"]) if r.get("trial") is not None
            for step, pid, _index, _prompt, _completion, reward in parts["samples"].get(r["key"], []))
    return sweeps.sweep_table(trials, rows)


def votes_digest(votes: list[dict]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(votes, sort_keys=True).encode()).hexdigest()


def _contestant(key: str, keys: dict[int, str]) -> str:
    return BASE if key == BASE else keys.get(int(key), key)


def _vote_row(v: Vote, rater: str, keys: dict[int, str]) -> dict:
    """A vote with its contestants as run keys, in the keys' order (first < second), whatever the ids."""
    first, second = _contestant(v.first, keys), _contestant(v.second, keys)
    left_is_first, previous = v.left_is_first, v.previous_result
    if second < first:
        first, second, left_is_first = second, first, not left_is_first
        previous = {Vote.FIRST: Vote.SECOND, Vote.SECOND: Vote.FIRST}.get(previous, previous)
    return {"rater": rater, "step": v.step, "prompt_id": v.prompt_id, "first": first, "second": second,
            "sample_index": v.sample_index, "left_is_first": left_is_first, "outcome": v.outcome,
            "result": Vote.result_of(v.outcome, left_is_first), "previous_result": previous, "revisions": v.revisions}


def leaderboard_document(board, keys: dict[int, str]) -> dict:
    """The leaderboard (derived from the votes; shown, not imported), with run keys for contestants and
    labels without database ids."""
    out = as_json(board)
    out.pop("experiment", None)
    labels = {}
    for row in out["rows"]:
        row["contestant"] = _contestant(row["contestant"], keys)
        if row["contestant"] != BASE:
            method, seed = row["contestant"].split("-s", 1)
            new = f"{method_label(method)} seed {seed}"
            labels[row["label"]] = row["label"] = new
    out["labels"] = [labels.get(label, label) for label in out["labels"]]
    for rater in out["raters"]:
        if rater["name"].startswith(IMPORTED_RATER):
            rater["name"] = rater["name"][len(IMPORTED_RATER):]
    return out


# --- plain tables from the document (CSV, Markdown, HTML) ----------------------------------------------


def metric_rows(doc: dict):
    """(experiment, run, method, seed, step, name, value) for every metric point, long format."""
    name = doc["experiment"]["name"]
    for run in doc["runs"]:
        for step, metric, value, _wall in doc["metrics"].get(run["key"], []):
            yield name, run["key"], run["method"], run["seed"], step, metric, value


def config_table(doc: dict) -> dict:
    """The runs' configs side by side: every key of any run's config, each run's value, and whether the
    values differ across runs (those rows are highlighted)."""
    runs = doc["runs"]
    names = sorted({k for r in runs for k in r["config"]})
    rows = []
    for name in names:
        values = [r["config"].get(name, None) for r in runs]
        shown = ["–" if name not in r["config"] else _plain(r["config"][name]) for r in runs]
        rows.append({"name": name, "values": shown, "differs": len({_plain(v) for v in values}) > 1})
    return {"runs": [r["label"] for r in runs], "rows": rows}


def _plain(value) -> str:
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, sort_keys=True)
    return str(value)
