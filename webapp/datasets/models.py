"""A user's dataset: an uploaded file (under ARTIFACT_ROOT/datasets) or a folder or file under an
administrator's PTLAB_DATA_ROOTS, its column mapping, and the content hash of the rows it held when saved."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse

from training.tasks import DatasetError, methods_for
from webapp.experiments.jobs import FileJob


class DatasetQuerySet(models.QuerySet):
    def visible_to(self, user) -> DatasetQuerySet:
        """Owned by or shared with `user` (a subquery: no duplicate rows)."""
        shared = Dataset.shared_with.through.objects.filter(user=user).values("dataset_id")
        return self.filter(Q(owner=user) | Q(pk__in=shared))


class Dataset(models.Model):
    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded file"
        SERVER = "server", "Server folder or file"
        HUB = "hub", "Hugging Face dataset"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets")
    shared_with = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="shared_datasets")
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=10, choices=Source.choices)
    file = models.FileField(upload_to="datasets/", blank=True, help_text="The upload (ARTIFACT_ROOT/datasets).")
    path = models.CharField(max_length=1000, blank=True,
                            help_text="A server path under PTLAB_DATA_ROOTS, or a Hugging Face dataset id.")
    config = models.CharField(max_length=200, blank=True, help_text="A hub dataset's configuration (name).")
    split = models.CharField(max_length=100, default="train", help_text="Split of a hub dataset or a saved DatasetDict.")
    mapping = models.JSONField(default=dict, help_text="Role -> column.")
    columns = models.JSONField(default=list)
    content_hash = models.CharField(max_length=64)
    rows = models.PositiveIntegerField(default=0)
    train_rows = models.PositiveIntegerField(default=0)
    eval_rows = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("datasets:detail", args=[self.pk])

    def location(self) -> str:
        """Where the workers read it: the same path on every host (ARTIFACT_ROOT is shared)."""
        return str(Path(settings.MEDIA_ROOT) / self.file.name) if self.file else self.path

    def spec(self) -> dict:
        """The run config's `dataset` for this dataset, with the content hash of the version saved: the worker
        refuses to train if the data it reads now hashes differently."""
        return {"path": self.location(), "mapping": self.mapping, "split": self.split,
                **({"hub": True} if self.source == self.Source.HUB else {}),
                **({"config": self.config} if self.config else {}),
                **({"hash": self.content_hash} if self.content_hash else {})}

    VERSION_FIELDS = ("file", "path", "config", "split", "mapping", "content_hash")  # what a run trained on

    def save(self, *args, **kwargs) -> None:
        """Saved, unless an experiment uses it and what its runs trained on would change."""
        if self.pk and self.in_use():
            before = Dataset.objects.filter(pk=self.pk).values(*self.VERSION_FIELDS).first() or {}
            changed = [f for f in self.VERSION_FIELDS if f in before
                       and before[f] != (self.file.name if f == "file" else getattr(self, f))]
            if changed:
                raise DatasetError(f"an experiment uses this dataset, so its {', '.join(changed)} cannot change: "
                                   "add the data again as a new dataset")
        super().save(*args, **kwargs)

    def in_use(self) -> bool:
        """Whether an experiment names it: then its file and mapping are fixed (its runs stay reproducible)."""
        return self.experiments.exists()

    def methods(self) -> tuple[str, ...]:
        return methods_for(self.mapping)

    def is_owned_by(self, user) -> bool:
        return self.owner_id == user.pk


class UploadJob(FileJob):
    """One uploaded dataset file being checked by a worker (queue `io`) rather than in the request (small files
    are run at once, by the same code): where it got to, and the dataset it made or why it made none."""

    TASK = "webapp.datasets.tasks.run_upload"
    SERVER_ERROR = "The dataset could not be read on the server; nothing was saved."
    KEEP_FILE_WHEN_DONE = True  # the stored upload becomes the dataset's file

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upload_jobs")
    name = models.CharField(max_length=200, help_text="The dataset's name.")
    split = models.CharField(max_length=100, default="train")
    file = models.FileField(upload_to="datasets/", blank=True, help_text="The upload: the dataset's file if it loads.")
    size = models.PositiveBigIntegerField(default=0)
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"upload #{self.pk} ({self.state})"

    def result(self) -> Dataset | None:
        return self.dataset

    def get_absolute_url(self) -> str:
        return reverse("datasets:upload_job", args=[self.pk])
