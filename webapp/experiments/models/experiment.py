"""Experiments and their QuerySet: what the list page filters, sorts and counts."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Case, Count, Exists, F, OuterRef, Q, Subquery, Value, When
from django.urls import reverse

from training.config import BaseConfig
from webapp.experiments.methods import METHOD_LABELS
from webapp.experiments.models.metric import Metric
from webapp.experiments.models.run import Run
from webapp.experiments.models.sample import Sample
from webapp.experiments.models.tag import Tag
from webapp.experiments.models.validators import config_bounds, queue_name_validator
from webapp.experiments.references import model_path, signal_model_paths

RUN_DEFAULTS = BaseConfig()  # a new experiment starts from the training core's defaults

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
                # the ratings app's (it builds on this one: reverse relations, no import)
                "votes": self.votes.count(), "rounds": self.rating_rounds.count(),
                "vote_datasets": self.vote_datasets.count(), "judge_jobs": self.judge_jobs.count(),
                "files": files, "bytes": size,
                "active": runs.active().count()}
