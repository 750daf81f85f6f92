"""Experiments, their runs (one per method and seed), and what runs log: metrics, samples; the workers
that train them and the trials that prompt their models. One module per model; they are all imported here,
where Django (and every caller) finds them.

The Run table is the source of truth for a run's state; the broker only carries run ids.
Single-row logic lives here; writes spanning several rows live in actions.py (`do_*`)."""

from webapp.experiments.models.clock import db_now
from webapp.experiments.models.experiment import (
    LIST_STATES,
    RUN_DEFAULTS,
    SORTS,
    Experiment,
    ExperimentQuerySet,
)
from webapp.experiments.models.metric import Metric
from webapp.experiments.models.run import LOG_LINES, Run, RunQuerySet
from webapp.experiments.models.sample import Sample
from webapp.experiments.models.tag import Tag
from webapp.experiments.models.trial import Trial, TrialAnswer
from webapp.experiments.models.validators import (
    config_bounds,
    not_a_reserved_queue,
    queue_name_validator,
    tag_validator,
)
from webapp.experiments.models.worker import Worker, WorkerQuerySet

__all__ = [
    "LIST_STATES", "LOG_LINES", "RUN_DEFAULTS", "SORTS", "Experiment", "ExperimentQuerySet", "Metric", "Run",
    "RunQuerySet", "Sample", "Tag", "Trial", "TrialAnswer", "Worker", "WorkerQuerySet", "config_bounds", "db_now",
    "not_a_reserved_queue", "queue_name_validator", "tag_validator",
]
