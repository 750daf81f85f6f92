"""Workers: Celery worker processes, as their own heartbeats report them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from webapp.experiments.models.run import Run


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
