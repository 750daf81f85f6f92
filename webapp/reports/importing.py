"""A report's JSON back into an experiment, owned by the user who imports it (`do_import_report`)."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from webapp.experiments.models import Experiment, Metric, Run, Sample
from webapp.ratings.models import BASE, Vote
from webapp.reports.models import ImportedReport
from webapp.reports.report import EXPERIMENT_FIELDS, FORMAT, IMPORTED_RATER, VERSION, votes_digest


class ReportError(ValueError):
    """The document is not a ptlab report this version can import."""


def _time(value):
    return datetime.fromisoformat(value) if value else None


def check(doc) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReportError("Not a ptlab report (its \"format\" is not \"ptlab-report\").")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise ReportError(f"Report format version {doc.get('version')!r}: this ptlab reads up to version {VERSION}.")
    for key, kind in (("experiment", dict), ("runs", list), ("metrics", dict), ("samples", dict), ("votes", list)):
        if not isinstance(doc.get(key), kind):
            raise ReportError(f"The report has no valid \"{key}\".")
    keys = [r.get("key") for r in doc["runs"] if isinstance(r, dict)]
    if len(keys) != len(doc["runs"]) or len(set(keys)) != len(keys) or BASE in keys:
        raise ReportError("The report's runs need distinct keys.")


def _rater(name: str):
    """The inactive placeholder user that holds an imported rater's votes (no login, never a real user)."""
    user, created = get_user_model().objects.get_or_create(
        username=f"{IMPORTED_RATER}{name}"[:150], defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@transaction.atomic
def do_import_report(doc: dict, owner) -> Experiment:
    """Create the experiment, its runs (finished as they were: nothing is queued), metrics, samples and
    votes. Raises ReportError for a document it cannot read."""
    check(doc)
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
            first, second = (str(runs[k].pk) if k != BASE else BASE for k in (v["first"], v["second"]))
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
    ImportedReport.objects.create(experiment=experiment, imported_by=owner, environment=doc.get("environment") or {},
                                  exported_at=str(doc.get("exported_at", ""))[:64],
                                  leaderboard=doc.get("leaderboard") or {},
                                  votes_digest=votes_digest(doc["votes"]) if doc.get("leaderboard") else "")
    return experiment
