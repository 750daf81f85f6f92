"""Samples: completions of eval prompts at an evaluation, with their gold reward."""

from __future__ import annotations

from django.db import models

from webapp.experiments.models.run import Run


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
