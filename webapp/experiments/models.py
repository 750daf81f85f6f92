"""Experiments, their runs (one per method and seed), and what runs log: metrics, samples.

The Run table is the source of truth for a run's state; the broker only carries run ids.
Single-row logic lives here; writes spanning several rows live in actions.py (`do_*`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import connection, models
from django.db.models import Count, F, Q
from django.db.models.functions import Now
from django.urls import reverse
from django.utils import timezone

from training.config import BaseConfig
from webapp.experiments.methods import METHOD_LABELS
from webapp.experiments.references import model_path, signal_model_paths

RUN_DEFAULTS = BaseConfig()  # a new experiment starts from the training core's defaults
LOG_LINES = 40  # lines of log kept on a run (the page shows the tail)

def db_now():
    """The database's clock. Heartbeats are written with it (`Now()`) and the reaper compares with it, so a
    host whose clock runs ahead or behind never reaps a live run. (SQLite: the local clock; it is one host.)"""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'NOW')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        return cursor.fetchone()[0]


def config_bounds(name: str) -> list:
    """The training config's bounds of a field, as model validators (the form and imports check the same)."""
    spec = next(s for s in BaseConfig.field_specs() if s["name"] == name)
    return [MinValueValidator(int(spec["min"])), MaxValueValidator(int(spec["max"]))]


queue_name_validator = RegexValidator(r"^[A-Za-z0-9_.-]{1,64}$", "Letters, digits, '.', '_' and '-' only.")


class ExperimentQuerySet(models.QuerySet):
    def visible_to(self, user) -> ExperimentQuerySet:
        """Owned or shared with `user`. A subquery, not a join: no duplicate rows, annotations stay exact."""
        shared = Experiment.shared_with.through.objects.filter(user=user).values("experiment_id")
        return self.filter(Q(owner=user) | Q(pk__in=shared))

    def with_run_counts(self) -> ExperimentQuerySet:
        """Per-state run counts in the same query (the list page's query count stays constant)."""
        counts = {f"n_{s}": Count("runs", filter=Q(runs__state=s)) for s in Run.State.values}
        return self.annotate(n_runs=Count("runs"), **counts)


class Experiment(models.Model):
    # Its settings, the ones every run of it shares: the form, the API and the report list them from here.
    SETTINGS = ("name", "base_model", "task", "methods", "seeds", "max_steps", "eval_every", "eval_prompts",
                "eval_samples", "max_new_tokens", "hyperparams", "rl_from_sft", "queue")

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="experiments")
    shared_with = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_experiments",
                                         help_text="Users who may view this experiment (read-only).")
    name = models.CharField(max_length=200)
    base_model = models.CharField(max_length=500, default=RUN_DEFAULTS.model)
    task = models.CharField(max_length=100, blank=True, help_text="A built-in task; empty when a dataset is uploaded.")
    dataset = models.FileField(upload_to="datasets/", blank=True, help_text="Uploaded JSONL (ARTIFACT_ROOT/datasets).")
    saved_dataset = models.ForeignKey("datasets.Dataset", null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="experiments",
                                      help_text="A dataset of the datasets app; replaces the task in run configs.")
    methods = models.JSONField(default=list)
    seeds = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(5)])
    max_steps = models.PositiveIntegerField(default=RUN_DEFAULTS.max_steps, validators=config_bounds("max_steps"))
    eval_every = models.PositiveIntegerField(default=RUN_DEFAULTS.eval_every, validators=config_bounds("eval_every"))
    eval_prompts = models.PositiveIntegerField(default=RUN_DEFAULTS.eval_prompts,
                                               validators=config_bounds("eval_prompts"))
    eval_samples = models.PositiveIntegerField(default=RUN_DEFAULTS.eval_samples,
                                               validators=config_bounds("eval_samples"))
    max_new_tokens = models.PositiveIntegerField(default=RUN_DEFAULTS.max_new_tokens,
                                                 validators=config_bounds("max_new_tokens"))
    hyperparams = models.JSONField(default=dict, blank=True, help_text="Per-method settings: {method: {key: value}}.")
    rl_from_sft = models.BooleanField(default=False, help_text="Other methods start from the SFT run's final model.")
    queue = models.CharField(max_length=64, default="train", validators=[queue_name_validator])
    imported = models.BooleanField(default=False, help_text="From a report import: its runs are never trained.")
    created = models.DateTimeField(auto_now_add=True)

    objects = ExperimentQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("experiments:detail", args=[self.pk])

    @property
    def task_label(self) -> str:
        if self.saved_dataset_id:
            return self.saved_dataset.name
        return Path(self.dataset.name).name if self.dataset else self.task

    @property
    def method_labels(self) -> list[str]:
        return [METHOD_LABELS.get(m, m) for m in self.methods]

    def task_for_config(self) -> str:
        """What a run config's `task` holds: the built-in name, or the uploaded file's absolute path."""
        return str(Path(settings.MEDIA_ROOT) / self.dataset.name) if self.dataset else self.task

    def run_config(self, method: str, seed: int, task: str | None = None) -> dict:
        """The training config of one run. Evaluation settings are the experiment's, never the method's:
        every run is measured the same way. Checkpoints at each evaluation make runs resumable."""
        params = dict(self.hyperparams.get(method, {}))
        steps = params.pop("max_steps", None)
        if params.get("reward_model"):
            params["reward_model"] = model_path(params["reward_model"])
        for key in ("reward", "gold_reward", "monitors"):
            if key in params:
                params[key] = signal_model_paths(params[key])
        return {
            "method": method,
            **params,
            "model": model_path(self.base_model),
            "task": task or self.task_for_config(),
            "seed": seed,
            "max_steps": self.max_steps if steps is None else steps,
            "eval_every": self.eval_every,
            "eval_prompts": self.eval_prompts,
            "eval_samples": self.eval_samples,
            "max_new_tokens": self.max_new_tokens,
            "checkpoint_every": self.eval_every,
            **({"dataset": self.saved_dataset.spec()} if self.saved_dataset_id else {}),
        }

    def is_owned_by(self, user) -> bool:
        return self.owner_id == user.pk

    @property
    def state(self) -> str:
        """One word for the list page, from the annotated counts (with_run_counts)."""
        if getattr(self, "n_running", 0):
            return "running"
        if getattr(self, "n_queued", 0) or getattr(self, "n_waiting", 0):
            return "queued"
        if getattr(self, "n_failed", 0):
            return "failed"
        if getattr(self, "n_runs", 0) and self.n_runs == getattr(self, "n_cancelled", 0):
            return "cancelled"
        return "finished" if getattr(self, "n_runs", 0) else "empty"


class RunQuerySet(models.QuerySet):
    def active(self) -> RunQuerySet:
        return self.filter(state__in=Run.ACTIVE_STATES)

    def trainable(self) -> RunQuerySet:
        """Runs the workers may train: never those of an imported report."""
        return self.filter(experiment__imported=False)

    def claim(self, pk: int, hostname: str, task_id: str) -> Run | None:
        """queued -> running, atomically. Returns the run, or None when it is not queued (already taken,
        cancelled, finished): a redelivered or duplicate message never trains a run twice."""
        claimed = self.trainable().filter(pk=pk, state=Run.State.QUEUED).update(
            state=Run.State.RUNNING, claimed_by=hostname, task_id=task_id, attempts=F("attempts") + 1,
            heartbeat_at=Now(), progress_at=Now(), started_at=Now(), phase="starting", eta_s=None)
        return self.get(pk=pk) if claimed else None

    def stale(self, silent_since) -> RunQuerySet:
        """Running runs whose worker has not sent a heartbeat since `silent_since`."""
        return self.trainable().filter(state=Run.State.RUNNING, heartbeat_at__lt=silent_since)

    def overdue_stops(self, requested_before) -> RunQuerySet:
        """Running runs asked to stop before `requested_before` that still have not."""
        return self.trainable().filter(state=Run.State.RUNNING, stop_requested=True,
                                       stop_requested_at__lt=requested_before)


class Run(models.Model):
    class State(models.TextChoices):
        WAITING = "waiting", "waiting"  # for the SFT run it starts from
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    ACTIVE_STATES = (State.WAITING, State.QUEUED, State.RUNNING)

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="runs")
    method = models.CharField(max_length=16)
    seed = models.PositiveIntegerField(default=0)
    config = models.JSONField(help_text="The resolved training config (training.config.from_dict input).")
    depends_on = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="dependents", help_text="The SFT run whose model this run starts from.")
    out_dir = models.CharField(max_length=1000, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    # Execution: who holds the run, and since when it has been silent.
    task_id = models.CharField(max_length=64, blank=True)
    claimed_by = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker started it (claim token).")
    attempts_before_resume = models.PositiveIntegerField(
        default=0, help_text="Attempts made before its owner last resumed it: the attempt limit counts from here.")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="The database's clock (db_now).")
    progress_at = models.DateTimeField(null=True, blank=True,
                                       help_text="Its process's last write (database clock): a hung process stops it.")
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When its message was last sent.")
    stop_requested = models.BooleanField(default=False)
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    # Progress, written by the worker's sink.
    step = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    eta_s = models.FloatField(null=True, blank=True)
    phase = models.CharField(max_length=32, blank=True)
    latest = models.JSONField(default=dict, blank=True, help_text="The last evaluation's metrics, and its step.")
    log = models.TextField(blank=True, help_text=f"The last {LOG_LINES} log lines.")
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="run_state_heartbeat")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.label}"

    def get_absolute_url(self) -> str:
        return reverse("experiments:run", args=[self.pk])

    @property
    def label(self) -> str:
        return f"{METHOD_LABELS.get(self.method, self.method)} seed {self.seed}"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def percent(self) -> int:
        if self.state == self.State.SUCCEEDED:
            return 100
        return min(100, round(100 * self.step / self.total)) if self.total else 0

    @property
    def model_dir(self) -> Path:
        return Path(self.out_dir) / "model"

    def log_tail(self, n: int = 8) -> list[str]:
        return self.log.splitlines()[-n:]

    @property
    def log_tail_text(self) -> str:
        return "\n".join(self.log_tail())

    @property
    def latest_reward(self) -> float | None:
        return _finite(self.latest.get("eval/reward"))

    @property
    def latest_kl(self) -> float | None:
        return _finite(self.latest.get("eval/kl"))

    @property
    def eval_step(self) -> int | None:
        return self.latest.get("step")

    def with_log(self, *lines: str) -> str:
        """The log text with `lines` appended, trimmed to the last LOG_LINES (caller saves it)."""
        return "\n".join((self.log.splitlines() + list(lines))[-LOG_LINES:])

    def status(self) -> dict:
        """What the experiment page polls for. Numbers only; the page escapes every string it shows."""
        return {
            "id": self.pk, "state": self.state, "step": self.step, "total": self.total or self.config.get("max_steps", 0),
            "percent": self.percent,
            "eta_s": self.eta_s, "phase": self.phase, "attempts": self.attempts, "claimed_by": self.claimed_by,
            "stop_requested": self.stop_requested, "reward": self.latest_reward, "kl": self.latest_kl,
            "eval_step": self.eval_step,
            "log": self.log_tail(), "error": self.error, "traceback": self.traceback, "active": self.is_active,
        }


def _finite(x):
    return x if isinstance(x, int | float) and math.isfinite(x) else None


class Metric(models.Model):
    """One point of one series, long format: `train/...` (the trainer's own) and `eval/...` (uniform)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    value = models.FloatField(null=True, help_text="NULL when the trainer logged NaN or infinity (a diverged run).")
    wall_time = models.FloatField(help_text="Seconds since the epoch when it was logged.")

    class Meta:
        # One point per (run, name, step): an attempt that wrote again what another wrote fails loudly.
        constraints = [models.UniqueConstraint(fields=["run", "name", "step"], name="metric_unique_point")]

    def __str__(self) -> str:
        return f"{self.name}@{self.step}={self.value:g}"


class Sample(models.Model):
    """A completion of an eval prompt at an evaluation, with its gold reward. Untrusted text: always escaped."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="samples")
    step = models.PositiveIntegerField()
    prompt_id = models.PositiveIntegerField()
    index = models.PositiveIntegerField(default=0, help_text="Which of the K completions of this prompt.")
    prompt = models.TextField()
    completion = models.TextField()
    reward = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["run", "step"], name="sample_run_step")]
        constraints = [models.UniqueConstraint(fields=["run", "step", "prompt_id", "index"],
                                               name="sample_unique_completion")]
        ordering = ["step", "prompt_id", "index"]


class WorkerQuerySet(models.QuerySet):
    def beat(self, hostname: str, **fields) -> None:
        """Record a heartbeat (creating the row on a worker's first one)."""
        fields["last_heartbeat"] = Now()
        if not self.filter(hostname=hostname).update(**fields):
            self.update_or_create(hostname=hostname, defaults=fields)


class Worker(models.Model):
    """A Celery worker process (one per GPU), as last reported by its own heartbeat."""

    hostname = models.CharField(max_length=255, unique=True, help_text="Celery node name, e.g. celery@gpu-node-3.")
    gpu = models.CharField(max_length=200, default="CPU", help_text="GPU name, or CPU.")
    gpu_memory_mb = models.PositiveIntegerField(null=True, blank=True)
    queues = models.CharField(max_length=500, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    current_run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    started_at = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname

    @property
    def heartbeat_age_s(self) -> float:
        return max(0.0, (timezone.now() - self.last_heartbeat).total_seconds())

    @property
    def is_alive(self) -> bool:
        return self.heartbeat_age_s <= settings.PTLAB_WORKER_STALE_SECONDS
