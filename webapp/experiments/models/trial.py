"""Trials: prompts put to runs' models, and each model's answer."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

from webapp.experiments.models.run import Run


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
