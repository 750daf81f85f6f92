"""Tags: labels on experiments."""

from __future__ import annotations

from django.db import models

from webapp.experiments.models.validators import tag_validator


class Tag(models.Model):
    """A label on experiments. One vocabulary for all: a user only ever sees the tags of the experiments
    they may see (the list's filter lists those alone)."""

    name = models.CharField(max_length=40, unique=True, validators=[tag_validator])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
