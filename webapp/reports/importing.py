"""A report's JSON back into an experiment, owned by the user who imports it (`do_import_report`)."""

from __future__ import annotations

import math
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models.functions import Lower

from training import safejson
from training.config import BaseConfig
from webapp.experiments.methods import METHODS
from webapp.experiments.models import Experiment, Metric, Run, Sample, queue_name_validator
from webapp.experiments.quotas import lock_owner, rate_refusal
from webapp.ratings.leaderboard import build_leaderboard
from webapp.ratings.models import BASE, Vote
from webapp.reports.models import ImportedReport
from webapp.reports.report import (
    EXPERIMENT_FIELDS,
    FORMAT,
    IMPORTED_RATER,
    VERSION,
    leaderboard_document,
    run_keys,
    votes_digest,
)

# The experiment's integer fields and their bounds (the form's, from the training config; seeds 1 to 5).
BOUNDS = {"seeds": (1, 5), **{f["name"]: (int(f["min"]), int(f["max"])) for f in BaseConfig.field_specs()
                              if f["name"] in ("max_steps", "eval_every", "eval_prompts", "eval_samples",
                                               "max_new_tokens")}}


FINAL_STATES = (Run.State.SUCCEEDED, Run.State.FAILED, Run.State.CANCELLED)  # imported runs are never queued
INT32 = 2**31 - 1
RESULTS = ("", Vote.FIRST, Vote.SECOND, Vote.TIE, Vote.BOTH_BAD)


class ReportError(ValueError):
    """The document is not a ptlab report this version can import; `path` (`$.runs[2].seed`) says where."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def _time(value):
    return datetime.fromisoformat(value) if value else None


# --- the schema: every value checked (type, range, enum, references) before anything is written ----------

def _fail(path: str, message: str):
    raise ReportError(message, path)


def _obj(value, path: str) -> dict:
    if not isinstance(value, dict):
        _fail(path, "must be an object")
    return value


def _list(value, path: str, most: int | None = None) -> list:
    if not isinstance(value, list):
        _fail(path, "must be a list")
    if most is not None and len(value) > most:
        _fail(path, f"has {len(value)} items: at most {most}")
    return value


def _int(value, path: str, lo: int = 0, hi: int = INT32) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, "must be an integer")
    if not lo <= value <= hi:
        _fail(path, f"must be between {lo} and {hi}")
    return value


def _num(value, path: str, *, null: bool = True):
    if value is None and null:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or abs(value) > 1e300:
        _fail(path, "must be a finite number" + (" or null" if null else ""))
    return value


def _text(value, path: str, most: int, *, least: int = 0, null: bool = False):
    if value is None and null:
        return value
    if not isinstance(value, str):
        _fail(path, "must be a string")
    if not least <= len(value) <= most:
        _fail(path, f"must have {least} to {most} characters")
    return value


def _choice(value, path: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(path, f"must be one of: {', '.join(repr(str(c)) for c in choices)}")
    return value


def _iso(value, path: str):
    if value is None or value == "":
        return None
    _text(value, path, 64)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        _fail(path, "must be a date and time (ISO 8601)")


def _scalars(value, path: str, most_keys: int = 200) -> dict:
    """A flat object of scalars (a run's config, a method's settings, a run's latest metrics)."""
    _obj(value, path)
    if len(value) > most_keys:
        _fail(path, f"has {len(value)} keys: at most {most_keys}")
    for k, v in value.items():
        _text(k, f"{path}.{k}", 100, least=1)
        if isinstance(v, str):
            _text(v, f"{path}.{k}", 1000)
        elif not isinstance(v, bool) and v is not None:
            _num(v, f"{path}.{k}")
    return value


def _check_experiment(e) -> None:
    _obj(e, "$.experiment")
    _text(e.get("name"), "$.experiment.name", 200, least=1)
    methods = _list(e.get("methods"), "$.experiment.methods", len(METHODS))
    for n, m in enumerate(methods):
        _choice(m, f"$.experiment.methods[{n}]", METHODS)
    if len(set(methods)) != len(methods):
        _fail("$.experiment.methods", "each method at most once")
    for key, spec in BOUNDS.items():
        if key in e:
            _int(e[key], f"$.experiment.{key}", *spec)
    for key, most in (("base_model", 500), ("task", 100)):
        if key in e:
            _text(e[key], f"$.experiment.{key}", most)
    if "queue" in e:
        _text(e["queue"], "$.experiment.queue", 64, least=1)
        try:
            queue_name_validator(e["queue"])
        except ValidationError:
            _fail("$.experiment.queue", "letters, digits, '.', '_' and '-' only")
    if "rl_from_sft" in e and not isinstance(e["rl_from_sft"], bool):
        _fail("$.experiment.rl_from_sft", "must be true or false")
    if "hyperparams" in e:
        for method, params in _obj(e["hyperparams"], "$.experiment.hyperparams").items():
            _choice(method, f"$.experiment.hyperparams.{method}", METHODS)
            _scalars(params, f"$.experiment.hyperparams.{method}")
    if "created" in e:
        _iso(e["created"], "$.experiment.created")


def _check_runs(runs) -> set[str]:
    most = settings.PTLAB_MAX_RUNS_PER_EXPERIMENT
    _list(runs, "$.runs")
    if len(runs) > most:
        _fail("$.runs", f"{len(runs)} runs: at most {most} runs per experiment (PTLAB_MAX_RUNS_PER_EXPERIMENT)")
    keys: dict[str, str | None] = {}
    for n, r in enumerate(runs):
        path = f"$.runs[{n}]"
        _obj(r, path)
        key = _text(r.get("key"), f"{path}.key", 64, least=1)
        if key in keys or key == BASE:
            _fail(f"{path}.key", f"{key!r} is used twice (or is the base model's key)")
        _choice(r.get("method"), f"{path}.method", METHODS)
        _int(r.get("seed"), f"{path}.seed")
        _scalars(r.get("config"), f"{path}.config")
        _choice(r.get("state"), f"{path}.state", FINAL_STATES)
        for name in ("step", "total"):
            if name in r:
                _int(r[name], f"{path}.{name}")
        if r.get("latest") is not None:
            latest = _scalars(r["latest"], f"{path}.latest")
            if latest.get("step") is not None:
                _int(latest["step"], f"{path}.latest.step")
            for k, v in latest.items():
                if k != "step" and not isinstance(v, int | float | type(None)) or isinstance(v, bool):
                    _fail(f"{path}.latest.{k}", "must be a number or null")
        _text(r.get("error", ""), f"{path}.error", 10_000)
        _text(r.get("claimed_by", ""), f"{path}.claimed_by", 255)
        for name in ("started_at", "finished_at"):
            _iso(r.get(name), f"{path}.{name}")
        for name in ("label", "method_label", "group", "group_label"):
            if name in r:
                _text(r[name], f"{path}.{name}", 300)
        depends = r.get("depends_on")
        if depends is not None:
            _text(depends, f"{path}.depends_on", 64)
        keys[key] = depends
    for n, (key, depends) in enumerate(keys.items()):
        if depends is not None and depends not in keys:
            _fail(f"$.runs[{n}].depends_on", f"no run has the key {depends!r}")
        seen, at = {key}, depends
        while at is not None:
            if at in seen:
                _fail(f"$.runs[{n}].depends_on", "runs depend on each other in a cycle")
            seen.add(at)
            at = keys.get(at)
    return set(keys)


def _check_series(doc: dict, keys: set[str]) -> int:
    points = 0
    for name, width in (("metrics", 4), ("samples", 6)):
        for key, rows in _obj(doc.get(name), f"$.{name}").items():
            path = f"$.{name}.{key}"
            if key not in keys:
                _fail(path, "no run has this key")
            points += len(_list(rows, path))
            for n, row in enumerate(rows):
                at = f"{path}[{n}]"
                if not isinstance(row, list) or len(row) != width:
                    _fail(at, f"must be a list of {width} values")
                _int(row[0], f"{at}[0]")
                if name == "metrics":
                    _text(row[1], f"{at}[1]", 200, least=1)
                    _num(row[2], f"{at}[2]")
                    _num(row[3], f"{at}[3]", null=False)
                else:
                    _int(row[1], f"{at}[1]")
                    _int(row[2], f"{at}[2]", 0, 10_000)
                    _text(row[3], f"{at}[3]", 100_000)
                    _text(row[4], f"{at}[4]", 100_000)
                    _num(row[5], f"{at}[5]")
    return points


def _check_votes(votes, keys: set[str]) -> None:
    contestants = keys | {BASE}
    seen = set()
    names = {v["rater"].lower() for v in votes if isinstance(v, dict) and isinstance(v.get("rater"), str)}
    real = set(get_user_model().objects.annotate(lower=Lower("username")).filter(lower__in=names)
               .values_list("lower", flat=True)) if names else set()
    for n, v in enumerate(votes):
        path = f"$.votes[{n}]"
        _obj(v, path)
        rater = _text(v.get("rater"), f"{path}.rater", 140, least=1)
        if rater.lower() in real:
            _fail(f"{path}.rater", f"{rater!r} is the name of a user of this installation: imported votes cannot "
                                   "be cast in their name (rename the rater in the file)")
        if rater.startswith(IMPORTED_RATER) or rater != rater.strip():
            _fail(f"{path}.rater", "must not start with '~' or a space")
        _int(v.get("step"), f"{path}.step")
        _int(v.get("prompt_id"), f"{path}.prompt_id")
        first = _contestant_key(v.get("first"), f"{path}.first", contestants)
        second = _contestant_key(v.get("second"), f"{path}.second", contestants)
        if first == second:
            _fail(f"{path}.second", "must differ from first")
        _int(v.get("sample_index", 0), f"{path}.sample_index", 0, 10_000)
        if not isinstance(v.get("left_is_first"), bool):
            _fail(f"{path}.left_is_first", "must be true or false")
        _choice(v.get("outcome"), f"{path}.outcome", Vote.Outcome.values)
        _choice(v.get("previous_result", ""), f"{path}.previous_result", RESULTS)
        _int(v.get("revisions", 0), f"{path}.revisions", 0, 1_000_000)
        item = (rater, v["step"], v["prompt_id"], *sorted((first, second)))
        if item in seen:
            _fail(path, "a second vote of this rater on this item")
        seen.add(item)


def _contestant_key(value, path: str, contestants) -> str:
    """A vote's contestant: "base", a run key, or "<run key>@<step>" (the step that run showed)."""
    if isinstance(value, str) and "@" in value:
        run, _, step = value.rpartition("@")
        _choice(run, path, sorted(contestants))
        if not step.isdigit() or len(step) > 9:
            _fail(path, "the step after '@' must be a number")
        return value
    return _choice(value, path, sorted(contestants))


def _check_environment(env, path: str = "$.environment") -> None:
    if env is None:
        return
    _obj(env, path)
    for key in ("python", "git_revision"):
        if key in env:
            _text(env[key], f"{path}.{key}", 200, null=True)
    if "packages" in env:
        for name, version in _obj(env["packages"], f"{path}.packages").items():
            _text(name, f"{path}.packages", 100)
            _text(version, f"{path}.packages.{name}", 100, null=True)
    if "machine" in env:
        machine = _obj(env["machine"], f"{path}.machine")
        for key in ("platform", "processor"):
            if key in machine:
                _text(machine[key], f"{path}.machine.{key}", 300, null=True)
        for key in ("cpus", "memory_gb"):
            if key in machine:
                _num(machine[key], f"{path}.machine.{key}")
    if "workers" in env:
        for n, w in enumerate(_list(env["workers"], f"{path}.workers", 1000)):
            at = f"{path}.workers[{n}]"
            _obj(w, at)
            _text(w.get("hostname", ""), f"{at}.hostname", 255)
            _text(w.get("gpu"), f"{at}.gpu", 200, null=True)
            _num(w.get("gpu_memory_mb"), f"{at}.gpu_memory_mb")


def check(doc) -> None:
    """Validate the whole document against the report's schema (types, ranges, enums, references, acyclic
    dependencies, the import limits); raises ReportError naming the JSON path of the first problem."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReportError("Not a ptlab report (its \"format\" is not \"ptlab-report\").")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ReportError(f"Report format version {version!r}: this ptlab reads versions 1 to {VERSION}.", "$.version")
    try:
        safejson.check(doc, max_depth=settings.PTLAB_MAX_JSON_DEPTH)
    except safejson.JSONLimitError as e:
        raise ReportError(e.message, e.path) from None
    if "exported_at" in doc:
        _text(doc["exported_at"], "$.exported_at", 64)
    _check_experiment(doc.get("experiment"))
    keys = _check_runs(doc.get("runs"))
    votes = _list(doc.get("votes"), "$.votes")
    points = _check_series(doc, keys) + len(votes)
    most = settings.PTLAB_MAX_IMPORT_POINTS
    if points > most:
        _fail("$", f"{points} metric points, samples and votes: at most {most} (PTLAB_MAX_IMPORT_POINTS)")
    _check_votes(votes, keys)
    if doc.get("leaderboard") is not None:
        _obj(doc["leaderboard"], "$.leaderboard")
    _check_environment(doc.get("environment"))


def _same_shape(imported, fresh) -> bool:
    """Whether an imported leaderboard has the structure of one computed here (what the pages read)."""
    if isinstance(fresh, dict):
        return isinstance(imported, dict) and imported.keys() == fresh.keys() and all(
            _same_shape(imported[k], fresh[k]) for k in fresh)
    if isinstance(fresh, list):
        return isinstance(imported, list) and len(imported) == len(fresh) and all(
            _same_shape(a, b) for a, b in zip(imported, fresh, strict=True))
    if isinstance(fresh, bool) or isinstance(imported, bool):
        return type(fresh) is type(imported)
    if fresh is None:
        return imported is None
    if isinstance(fresh, int | float):
        return isinstance(imported, int | float)
    return type(imported) is type(fresh)


def _rater(name: str):
    """The inactive placeholder user that holds an imported rater's votes (no login, never a real user)."""
    user, created = get_user_model().objects.get_or_create(
        username=f"{IMPORTED_RATER}{name}"[:150], defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def do_import_report(doc: dict, owner, *, checked: bool = False) -> Experiment:
    """Create the experiment, its runs (finished as they were: nothing is queued), metrics, samples and
    votes. The whole document is validated first (`check`); raises ReportError for one it cannot read,
    or when the owner has reached the hourly limit of new experiments."""
    if not checked:  # `checked`: the caller has just run check(doc) (the import job)
        check(doc)
    with transaction.atomic():
        lock_owner(owner)  # the hourly quota and the create: one step per user, never raced
        refused = rate_refusal(owner)
        if refused:
            raise ReportError(refused)
        return _write(doc, owner)


def _write(doc: dict, owner) -> Experiment:
    e = doc["experiment"]
    try:
        experiment = Experiment.objects.create(owner=owner, imported=True,
                                               **{f: e[f] for f in EXPERIMENT_FIELDS if f in e})
        experiment.full_clean(exclude=["owner", "shared_with", "dataset"])
        if e.get("created"):
            Experiment.objects.filter(pk=experiment.pk).update(created=_time(e["created"]))
            experiment.refresh_from_db(fields=["created"])
        runs = {}
        for r in doc["runs"]:
            runs[r["key"]] = Run.objects.create(
                experiment=experiment, method=r["method"], seed=r["seed"], config=r["config"], state=r["state"],
                step=r.get("step", 0), total=r.get("total", 0), latest=r.get("latest") or {}, error=r.get("error", ""),
                started_at=_time(r.get("started_at")), finished_at=_time(r.get("finished_at")),
                claimed_by=r.get("claimed_by", ""))
        for r in doc["runs"]:
            if r.get("depends_on") in runs:
                run = runs[r["key"]]
                run.depends_on = runs[r["depends_on"]]
                run.save(update_fields=["depends_on"])
        Metric.objects.bulk_create(
            (Metric(run=runs[key], step=step, name=name, value=value, wall_time=wall)
             for key, points in doc["metrics"].items() for step, name, value, wall in points), batch_size=5000)
        Sample.objects.bulk_create(
            (Sample(run=runs[key], step=step, prompt_id=pid, index=index, prompt=prompt, completion=completion,
                    reward=float("nan") if reward is None else reward)
             for key, rows in doc["samples"].items() for step, pid, index, prompt, completion, reward in rows),
            batch_size=2000)
        raters = {}
        votes = []
        for v in doc["votes"]:
            if v["rater"] not in raters:
                raters[v["rater"]] = _rater(v["rater"])
            first, second = (BASE if k == BASE else f"{runs[k.rpartition('@')[0] or k].pk}@"
                             f"{k.rpartition('@')[2] if '@' in k else v['step']}" for k in (v["first"], v["second"]))
            left_is_first, previous = v["left_is_first"], v.get("previous_result", "")
            if second < first:  # new ids: keep first < second as the table requires
                first, second, left_is_first = second, first, not left_is_first
                previous = {Vote.FIRST: Vote.SECOND, Vote.SECOND: Vote.FIRST}.get(previous, previous)
            votes.append(Vote(experiment=experiment, rater=raters[v["rater"]], step=v["step"], prompt_id=v["prompt_id"],
                              first=first, second=second, sample_index=v.get("sample_index", 0),
                              left_is_first=left_is_first, outcome=v["outcome"], previous_result=previous,
                              revisions=v.get("revisions", 0)))
        Vote.objects.bulk_create(votes, batch_size=2000)
    except (KeyError, TypeError, ValueError, ValidationError, DatabaseError) as exc:
        raise ReportError(f"The report is incomplete or malformed: {exc!r}") from exc
    # The report's leaderboard is shown again (its bootstrap depends on the original ids) only when it has
    # the structure of one computed here: the pages then read nothing they do not expect.
    board = doc.get("leaderboard") or {}
    if board:
        runs_in_order = list(experiment.runs.order_by("id"))
        fresh = leaderboard_document(build_leaderboard(experiment), run_keys(runs_in_order))
        if not _same_shape(board, fresh):
            board = {}
    ImportedReport.objects.create(experiment=experiment, imported_by=owner, environment=doc.get("environment") or {},
                                  exported_at=str(doc.get("exported_at", ""))[:64], leaderboard=board,
                                  votes_digest=votes_digest(doc["votes"]) if board else "")
    return experiment
