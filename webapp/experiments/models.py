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
from django.db.models import Case, Count, Exists, F, OuterRef, Q, Subquery, Value, When
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
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")  # as Now(); CURRENT_TIMESTAMP is the transaction's start
        return cursor.fetchone()[0]


def config_bounds(name: str) -> list:
    """The training config's bounds of a field, as model validators (the form and imports check the same)."""
    spec = next(s for s in BaseConfig.field_specs() if s["name"] == name)
    return [MinValueValidator(int(spec["min"])), MaxValueValidator(int(spec["max"]))]


queue_name_validator = RegexValidator(r"^[A-Za-z0-9_.-]{1,64}$", "Letters, digits, '.', '_' and '-' only.")
def not_a_reserved_queue(value: str) -> None:
    """Training runs never go to the `try` queue (its worker answers "try a model" prompts) nor to the io queue
    (report imports and dataset uploads)."""
    from django.conf import settings
    from django.core.exceptions import ValidationError

    if value == "try":
        raise ValidationError("The queue “try” is for trying models; choose another for training.")
    if value == settings.PTLAB_IO_QUEUE:
        raise ValidationError(f"The queue “{value}” is for imports and uploads; choose another for training.")


tag_validator = RegexValidator(r"^[\w.+-]{1,40}$", "A tag is up to 40 letters, digits, '.', '_', '+' or '-'.")


class Tag(models.Model):
    """A label on experiments. One vocabulary for all: a user only ever sees the tags of the experiments
    they may see (the list's filter lists those alone)."""

    name = models.CharField(max_length=40, unique=True, validators=[tag_validator])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# The list page's sort keys -> order_by (the reward ones need `with_best_reward`); no reward: last.
SORTS = {
    "-created": ("-created", "-id"), "created": ("created", "id"), "name": ("name", "-id"), "-name": ("-name", "-id"),
    "-reward": (F("best_reward").desc(nulls_last=True), "-id"), "reward": (F("best_reward").asc(nulls_last=True), "-id"),
}
LIST_STATES = ("running", "queued", "failed", "cancelled", "finished", "empty")


class ExperimentQuerySet(models.QuerySet):
    def visible_to(self, user) -> ExperimentQuerySet:
        """Owned or shared with `user`. A subquery, not a join: no duplicate rows, annotations stay exact."""
        shared = Experiment.shared_with.through.objects.filter(user=user).values("experiment_id")
        return self.filter(Q(owner=user) | Q(pk__in=shared))

    def with_run_counts(self) -> ExperimentQuerySet:
        """Per-state run counts in the same query (the list page's query count stays constant), and the
        one-word state they make (`list_state`, as the `state` property says it)."""
        counts = {f"n_{s}": Count("runs", filter=Q(runs__state=s)) for s in Run.State.values}
        return self.annotate(n_runs=Count("runs"), **counts).annotate(list_state=Case(
            When(n_running__gt=0, then=Value("running")),
            When(Q(n_queued__gt=0) | Q(n_waiting__gt=0), then=Value("queued")),
            When(n_failed__gt=0, then=Value("failed")),
            When(n_runs=0, then=Value("empty")),
            When(n_runs=F("n_cancelled"), then=Value("cancelled")),
            default=Value("finished"), output_field=models.CharField()))

    def with_best_reward(self) -> ExperimentQuerySet:
        """`best_reward`: the best final gold reward (`eval/reward` at a run's last evaluation) among the
        experiment's runs, None without one. Subqueries in the same query: per run one seek in the
        (run, name, step) unique index, so sorting 10,000 experiments by it stays fast."""
        final = (Metric.objects.filter(run=OuterRef("pk"), name="eval/reward").order_by("-step")
                 .values("value")[:1])
        best = (Run.objects.filter(experiment=OuterRef("pk"))
                .annotate(final=Subquery(final, output_field=models.FloatField()))
                .filter(final__isnull=False).order_by("-final").values("final")[:1])
        return self.annotate(best_reward=Subquery(best, output_field=models.FloatField()))

    def in_state(self, state: str) -> ExperimentQuerySet:
        """Those whose one-word state (as `state` says it) is `state`; without grouping (EXISTS only)."""
        def has(*states):
            runs = Run.objects.filter(experiment=OuterRef("pk"))
            return Exists(runs.filter(state__in=states) if states else runs)

        S = Run.State
        conditions = {
            "running": has(S.RUNNING),
            "queued": ~has(S.RUNNING) & has(S.QUEUED, S.WAITING),
            "failed": ~has(*Run.ACTIVE_STATES) & has(S.FAILED),
            "empty": ~has(),
            "cancelled": has(S.CANCELLED) & ~has(*(s for s in S.values if s != S.CANCELLED)),
            "finished": has(S.SUCCEEDED) & ~has(*Run.ACTIVE_STATES, S.FAILED),
        }
        return self.filter(conditions[state]) if state in conditions else self

    def starred_by_user(self, user) -> ExperimentQuerySet:
        return self.filter(pk__in=Experiment.starred_by.through.objects.filter(user=user).values("experiment_id"))

    def with_star(self, user) -> ExperimentQuerySet:
        """`starred`: whether `user` starred it."""
        stars = Experiment.starred_by.through.objects.filter(experiment=OuterRef("pk"), user=user)
        return self.annotate(starred=Exists(stars))

    def search(self, text: str) -> ExperimentQuerySet:
        """Every word of `text` in its name, a tag, the model, the task or dataset, or a method (key or label)."""
        qs = self
        for word in text.split()[:10]:
            methods = [key for key, label in METHOD_LABELS.items() if word.lower() in (key, label.lower())]
            tagged = Experiment.tags.through.objects.filter(tag__name__iexact=word).values("experiment_id")
            match = (Q(name__icontains=word) | Q(base_model__icontains=word) | Q(task__icontains=word)
                     | Q(dataset__icontains=word) | Q(pk__in=tagged))
            for method in methods:
                match |= Q(methods__icontains=f'"{method}"')
            qs = qs.filter(match)
        return qs

    def tagged(self, name: str) -> ExperimentQuerySet:
        return self.filter(pk__in=Experiment.tags.through.objects.filter(tag__name=name).values("experiment_id"))


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
    sweep = models.JSONField(default=dict, blank=True, help_text="Equal tuning budget (webapp.experiments.sweeps."
                             "SweepConfig: trials, sampler, prune, seed); empty: no sweep, one run per method and seed.")
    created = models.DateTimeField(auto_now_add=True)
    # Organising: what its owner writes about it and how they file it.
    notes = models.TextField(blank=True, max_length=20_000, help_text="Markdown; raw HTML is shown as text.")
    tags = models.ManyToManyField(Tag, blank=True, related_name="experiments")
    starred_by = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="starred_experiments",
                                        help_text="Users who starred it (each their own star).")
    archived = models.BooleanField(default=False, help_text="Hidden from the list unless asked for.")

    objects = ExperimentQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("experiments:detail", args=[self.pk])

    @property
    def notes_html(self):
        """Its notes as HTML, safe to show (raw HTML in them is escaped)."""
        from webapp.experiments.notes import render_markdown

        return render_markdown(self.notes)

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
        if hasattr(self, "list_state"):
            return self.list_state
        if getattr(self, "n_running", 0):
            return "running"
        if getattr(self, "n_queued", 0) or getattr(self, "n_waiting", 0):
            return "queued"
        if getattr(self, "n_failed", 0):
            return "failed"
        if getattr(self, "n_runs", 0) and self.n_runs == getattr(self, "n_cancelled", 0):
            return "cancelled"
        return "finished" if getattr(self, "n_runs", 0) else "empty"


    def artifact_dirs(self) -> list[Path]:
        """Its runs' output folders that exist, each inside ARTIFACT_ROOT (anything else is never touched)."""
        root = Path(settings.ARTIFACT_ROOT).resolve()
        out = []
        for out_dir in self.runs.exclude(out_dir="").values_list("out_dir", flat=True):
            path = Path(out_dir).resolve()
            if path != root and path.is_relative_to(root) and path.is_dir():
                out.append(path)
        return out

    def dataset_file_owned(self) -> str:
        """Its uploaded dataset's name, if no other experiment uses the file (a clone shares its source's)."""
        if not self.dataset:
            return ""
        shared = Experiment.objects.filter(dataset=self.dataset.name).exclude(pk=self.pk).exists()
        return "" if shared else self.dataset.name

    def deletion_summary(self) -> dict:
        """What deleting it removes: rows by kind, and the files (their count and size) of its runs and dataset."""
        files, size = 0, 0
        paths = self.artifact_dirs()
        for folder in paths:
            for f in folder.rglob("*"):
                if f.is_file() and not f.is_symlink():
                    files += 1
                    size += f.stat().st_size
        if self.dataset_file_owned() and self.dataset.storage.exists(self.dataset.name):
            files += 1
            size += self.dataset.size
        runs = self.runs.all()
        return {"runs": runs.count(), "metrics": Metric.objects.filter(run__in=runs).count(),
                "samples": Sample.objects.filter(run__in=runs).count(),
                "votes": self.votes.count(),  # the ratings app's (it builds on this one: no import)
                "files": files, "bytes": size,
                "active": runs.active().count()}


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

    def queue_positions(self, runs) -> dict[int, int]:
        """Run id -> its place in its queue (Run.queue_position's order), for the queued ones among `runs`:
        one query (the queued runs of those queues), none when none is queued."""
        queued = [r for r in runs if r.state == Run.State.QUEUED]
        if not queued:
            return {}
        queues = {r.experiment.queue for r in queued}
        rows = (self.trainable().filter(state=Run.State.QUEUED, experiment__queue__in=queues)
                .values_list("pk", "experiment__queue", "queued_at", "created"))
        order: dict[str, list] = {}
        for pk, queue, queued_at, created in rows:
            order.setdefault(queue, []).append((queued_at or created, pk))
        places = {}
        for line in order.values():
            for place, (_, pk) in enumerate(sorted(line), start=1):
                places[pk] = place
        return {r.pk: places[r.pk] for r in queued if r.pk in places}

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
    trial = models.PositiveIntegerField(null=True, blank=True,
                                        help_text="Its number among its method's sweep trials (none outside a sweep).")
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
        if self.trial is not None:
            return f"{METHOD_LABELS.get(self.method, self.method)} trial {self.trial}"
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

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.out_dir) / "checkpoints"

    def downloads(self) -> list[dict]:
        """What can be downloaded: the final model (once saved) and each published checkpoint, by step.
        From its own out_dir only, inside ARTIFACT_ROOT."""
        from webapp.experiments.downloads import inside_artifacts

        if not self.out_dir:
            return []
        out = []
        if inside_artifacts(self.model_dir) and (self.model_dir / "config.json").is_file():
            out.append({"label": "Final model", "name": "model", "step": None,
                        "url": reverse("experiments:run_download_model", args=[self.pk])})
        if inside_artifacts(self.checkpoints_dir):
            steps = sorted(int(p.name.split("-")[-1]) for p in self.checkpoints_dir.glob("checkpoint-*")
                           if p.name.split("-")[-1].isdigit() and inside_artifacts(p))
            out += [{"label": f"Checkpoint at step {s}", "name": f"checkpoint-{s}", "step": s,
                     "url": reverse("experiments:run_download_checkpoint", args=[self.pk, s])} for s in steps]
        return out

    def model_versions(self) -> list[dict]:
        """What of this run can be tried (webapp/workers/trying.py loads it): its final model once saved,
        then its published checkpoints, newest first: {key, label, step, path, weights, tokenizer}. LoRA
        checkpoints (adapters only) are left out. Paths come from its own folders, inside ARTIFACT_ROOT."""
        from webapp.experiments.downloads import inside_artifacts

        if not self.out_dir:
            return []
        tokenizer = str(self.config.get("model") or model_path(self.experiment.base_model))
        out = []
        if inside_artifacts(self.model_dir) and (self.model_dir / "config.json").is_file():
            out.append({"key": "final", "label": "final model", "step": None, "path": str(self.model_dir),
                        "weights": "", "tokenizer": str(self.model_dir)})
        for item in sorted(self.downloads(), key=lambda d: -(d["step"] or 0)):
            if item["step"] is None:
                continue
            folder = self.checkpoints_dir / item["name"]
            if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
                path, weights = str(folder), ""
            elif (folder / "policy.pt").is_file():  # our PPO: the policy's state dict
                path, weights = tokenizer, str(folder / "policy.pt")
            else:
                continue
            out.append({"key": f"checkpoint-{item['step']}", "label": f"checkpoint at step {item['step']}",
                        "step": item["step"], "path": path, "weights": weights, "tokenizer": tokenizer})
        return out

    def queue_position(self) -> int | None:
        """1 for the next run its queue's workers take, 2 for the one after...; None unless queued. By when
        each was (last) sent: the broker's order, except that resumed and requeued runs, sent ahead, may
        pass runs sent before them, so the position is an estimate."""
        return Run.objects.queue_positions([self]).get(self.pk)

    def cli_command(self) -> str:
        return f"python -m training run run-{self.pk}.json --out runs/{self.pk}"

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
    gpu_count = models.PositiveSmallIntegerField(default=0, help_text="GPUs this worker holds for its runs "
                                                 "(a run on N processes takes N of them).")
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


class Trial(models.Model):
    """A prompt put to a run's model (its final model or a checkpoint) beside the base model and up to three
    other runs' models, with sampling settings; a worker on the `try` queue answers each (TrialAnswer)."""

    MAX_OTHERS = 3

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="trials")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="trials",
                            help_text="The run whose page it was asked from.")
    prompt = models.TextField(max_length=4000)
    temperature = models.FloatField(default=0.7, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)],
                                    help_text="0: greedy.")
    top_p = models.FloatField(default=1.0, validators=[MinValueValidator(0.01), MaxValueValidator(1.0)])
    max_new_tokens = models.PositiveIntegerField(default=64, validators=[MinValueValidator(1),
                                                                         MaxValueValidator(512)])
    seed = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(2**31 - 1)])
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def get_absolute_url(self) -> str:
        return reverse("experiments:trial", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return any(a.state in TrialAnswer.ACTIVE for a in self.answers.all())


class TrialAnswer(models.Model):
    """One model's answer to a trial. The model's folder is resolved by the server when the trial is made
    (never a path from the request); its text is model output: always escaped."""

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    ACTIVE = (State.QUEUED, State.RUNNING)

    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="answers")
    position = models.PositiveSmallIntegerField(default=0)
    label = models.CharField(max_length=300)
    source_run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                   help_text="Whose model; empty for the base model.")
    checkpoint = models.PositiveIntegerField(null=True, blank=True, help_text="Its step; empty: the final model.")
    model_path = models.CharField(max_length=1000, help_text="What the worker loads (a folder or a built-in name).")
    weights_path = models.CharField(max_length=1000, blank=True,
                                    help_text="A state dict to load into model_path's architecture (PPO checkpoints).")
    tokenizer_path = models.CharField(max_length=1000)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    text = models.TextField(blank=True)
    error = models.TextField(blank=True)
    seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["trial", "position"]

    def status(self) -> dict:
        return {"id": self.pk, "label": self.label, "state": self.state, "text": self.text, "error": self.error,
                "seconds": self.seconds}
