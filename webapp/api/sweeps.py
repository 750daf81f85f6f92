"""The API's view of an experiment's equal-budget sweep: its settings, each method's trials as the sweep
driver reads them (webapp.experiments.actions.recorded_trials), and the best-of-budget table the compare
page shows (webapp.compare.loader.sweep_table), so the API and the page cannot disagree."""

from __future__ import annotations

from django.http import HttpRequest

from webapp.api import schemas
from webapp.api.errors import not_found
from webapp.api.experiments import experiment_or_404
from webapp.api.ninja_api import ERRORS, api
from webapp.api.params import ID
from webapp.api.serializers import finite, sweep_settings
from webapp.compare import loader
from webapp.experiments.actions import recorded_trials
from webapp.experiments.models import Experiment
from webapp.experiments.sweeps import SweepConfig, Trial, from_settings


def trial_data(run, trial: Trial | None) -> dict:
    """A trial run with the sweep's reading of it: its state and validation reward at its latest evaluation."""
    latest = None
    if trial is not None:
        latest = trial.value if trial.value is not None else (
            trial.intermediate[max(trial.intermediate)] if trial.intermediate else None)
    state = trial.state if trial is not None else "failed"
    return {"run": run.pk, "number": run.trial, "label": run.label, "params": trial.params if trial else {},
            "state": state, "run_state": run.state, "validation": finite(latest), "pruned": state == "pruned"}


def sweep_data(experiment: Experiment, config: SweepConfig) -> dict:
    """Per method (the compare page's rows) its trials, best trial, sensitivity and compute; the winners'
    verdicts on the test half."""
    runs = [run for run in loader.experiment_runs(experiment) if run.trial is not None]
    table = loader.sweep_table(runs, loader.run_data(runs)) if runs else None
    if table is None:
        return {"experiment": experiment.pk, "settings": sweep_settings(config), "validation_prompts": 0,
                "test_prompts": 0, "methods": [], "verdicts": {"rows": [], "notes": []}}
    methods = []
    for row in table["methods"]:
        method = row["group"]
        recorded = {t.number: t for t in recorded_trials(experiment, method, config)} \
            if method in config.spaces else {}
        best = row["best"]
        methods.append({
            "method": method, "label": row["label"], "budget": config.trials if method in config.spaces else 1,
            "searched": [p.name for p in config.spaces.get(method, ())],
            "trials": [trial_data(run, recorded.get(run.trial)) for run in runs if run.method == method],
            "completed": row["completed"], "pruned": row["pruned"],
            "best": None if best is None else {**best, "validation": finite(best["validation"]),
                                               "test": finite(best["test"])},
            "sensitivity": {name: {"spearman": finite(v["spearman"]), "spread": finite(v["spread"])}
                            for name, v in row["sensitivity"].items()},
            "compute": row["compute"],
        })
    return {"experiment": experiment.pk, "settings": sweep_settings(config),
            "validation_prompts": table["validation_prompts"], "test_prompts": table["test_prompts"],
            "methods": methods, "verdicts": table["verdicts"]}


@api.get("/experiments/{int:id}/sweep", response={200: schemas.SweepOut, **ERRORS}, url_name="experiment_sweep",
         operation_id="getSweep", tags=["experiments"],
         summary="An experiment's sweep: each method's trials, its best trial and the best-of-budget verdicts "
                 "(404 without a sweep)")
def experiment_sweep(request: HttpRequest, pk: int = ID):
    exp = experiment_or_404(request, pk)
    config = from_settings(exp.sweep)
    if config is None:
        raise not_found("sweep")
    return sweep_data(exp, config)
