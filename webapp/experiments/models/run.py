"""Runs (one per method and seed, or per sweep trial) and their QuerySet: claiming, queue order, the reaper's
queries. The Run table is the source of truth for a run's state; the broker only carries run ids."""

from __future__ import annotations

import math
from pathlib import Path

from django.db import models
from django.db.models import F
from django.db.models.functions import Now
from django.urls import reverse

from webapp.experiments.methods import METHOD_LABELS
from webapp.experiments.references import model_path

LOG_LINES = 40  # lines of log kept on a run (the page shows the tail)


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

    experiment = models.ForeignKey("experiments.Experiment", on_delete=models.CASCADE, related_name="runs")
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
