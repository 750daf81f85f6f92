"""Plain dicts of the models, as the API sends them (their shapes are in schema.py)."""

from __future__ import annotations

import math

from django.apps import apps
from django.urls import NoReverseMatch, reverse

from webapp.experiments.models import Experiment, Run, Sample
from webapp.experiments.references import public_config, public_text, public_value
from webapp.experiments.sweeps import SweepConfig, from_settings


def finite(x):
    return x if isinstance(x, int | float) and math.isfinite(x) else None


def _iso(dt) -> str | None:
    return dt.isoformat() if dt else None


def experiment_data(e: Experiment, runs: list[Run] | None = None) -> dict:
    data = {
        "id": e.pk, "name": e.name, "owner": e.owner.get_username(),
        **{f: getattr(e, f) for f in Experiment.SETTINGS[1:]}, "task": e.task_label, "methods": list(e.methods),
        "base_model": public_value(e.base_model),
        "hyperparams": {m: public_config(p) for m, p in e.hyperparams.items()},
        "created": _iso(e.created), "state": e.state, "saved_dataset": e.saved_dataset_id,
        "sweep": sweep_settings(from_settings(e.sweep)),
        "url": e.get_absolute_url(), "api_url": reverse("api:experiment", args=[e.pk]),
    }
    if apps.is_installed("webapp.reports"):
        data["report_url"] = reverse("api:experiment_report", args=[e.pk, "json"])
        data["downloads"] = _downloads(e.pk)
    if runs is not None:
        for r in runs:
            r.experiment = e  # one object: no query per run for its queue
        places = Run.objects.queue_positions(runs)
        data["runs"] = [run_data(r, place=places.get(r.pk)) for r in runs]
    return data


def sweep_settings(config: SweepConfig | None) -> dict | None:
    """A sweep's settings as they apply (the defaults filled in); None without a sweep."""
    if config is None:
        return None
    return {"trials": config.trials, "sampler": config.sampler, "prune": config.prune,
            "startup_trials": config.startup_trials, "seed": config.seed}


def run_data(r: Run, place: int | None | bool = False) -> dict:
    """`place`: its place in its queue if known (False: ask, one query for a queued run)."""
    status = r.status()
    return {
        "id": r.pk, "experiment": r.experiment_id, "method": r.method, "seed": r.seed, "label": r.label,
        "state": r.state, "active": r.is_active, "step": status["step"], "total": status["total"],
        "percent": r.percent, "eta_s": r.eta_s, "phase": r.phase, "attempts": r.attempts,
        "stop_requested": r.stop_requested, "depends_on": r.depends_on_id,
        "latest": {"reward": r.latest_reward, "kl": r.latest_kl, "step": r.eval_step},
        "error": public_text(r.error), "log": [public_text(line) for line in r.log_tail()],
        "config": public_config(r.config),
        "created": _iso(r.created), "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at),
        "url": r.get_absolute_url(), "api_url": reverse("api:run", args=[r.pk]),
        "queue_position": r.queue_position() if place is False else place, "trial": r.trial,
    }


def sample_data(s: Sample) -> dict:
    return {"step": s.step, "prompt_id": s.prompt_id, "index": s.index, "prompt": s.prompt,
            "completion": s.completion, "reward": s.reward}


def _downloads(pk: int) -> dict:
    """Links to the reports app's export pages, by format (those its URLconf resolves)."""
    found = {}
    for fmt in ("html", "pdf", "json", "csv", "votes.csv", "md"):
        try:
            found[fmt] = reverse("reports:export", args=[pk, fmt])
        except NoReverseMatch:
            pass
    return found
