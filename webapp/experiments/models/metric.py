"""Metric points: what runs log, one series point per row."""

from __future__ import annotations

from django.db import models

from webapp.experiments.models.run import Run


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
