"""What an imported report keeps beyond the experiment it became: where the runs really trained."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from webapp.experiments.jobs import FileJob
from webapp.experiments.models import Experiment


class ImportedReport(models.Model):
    """An experiment created from a report's JSON: the environment it was exported with (package
    versions, code revision, hardware of the original installation), which its own exports repeat."""

    experiment = models.OneToOneField(Experiment, on_delete=models.CASCADE, related_name="imported_report")
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    environment = models.JSONField(default=dict)
    exported_at = models.CharField(max_length=64, blank=True)
    leaderboard = models.JSONField(default=dict, blank=True,
                                   help_text="The report's leaderboard, shown again while the votes are the ones imported "
                                             "(its bootstrap intervals depend on the original installation's ids).")
    votes_digest = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the imported votes.")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"import of {self.experiment}"


class ImportJob(FileJob):
    """One report import, done by a worker (queue `io`) rather than in the request: the uploaded file, where
    the import got to, and the experiment it made or the reason it made none. The row is the job's only state."""

    TASK = "webapp.reports.tasks.run_import"
    SERVER_ERROR = "The import failed on the server; nothing was saved."

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="import_jobs")
    file = models.FileField(upload_to="imports/", blank=True, help_text="The upload, removed once the job ends.")
    name = models.CharField(max_length=255, blank=True, help_text="The uploaded file's name.")
    size = models.PositiveBigIntegerField(default=0)
    experiment = models.ForeignKey(Experiment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    def __str__(self) -> str:
        return f"import #{self.pk} ({self.state})"

    def result(self) -> Experiment | None:
        return self.experiment

    def get_absolute_url(self) -> str:
        return reverse("reports:import_job", args=[self.pk])
