"""What an imported report keeps beyond the experiment it became: where the runs really trained."""

from __future__ import annotations

from django.conf import settings
from django.db import models

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
