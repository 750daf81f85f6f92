"""What the comparison keeps in the database: each finished run's series of the names the charts need,
downsampled once when it ends (`SeriesSummary`), so that a view reads one row instead of its metric rows."""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils import timezone

from webapp.compare.core.series import MAX_BUCKETS, NEEDED_NAMES, SeriesData
from webapp.experiments.models import Run

FORMAT = 1
# The names and the downsampling a summary was made with: a summary of another spec (a chart that
# needs a new name, another point budget) is not used, and is replaced when the run's rows are read.
SPEC = hashlib.sha256(repr((FORMAT, MAX_BUCKETS, sorted(NEEDED_NAMES))).encode()).hexdigest()[:16]


class SeriesSummaryQuerySet(models.QuerySet):
    def current(self, runs: list[Run]) -> dict[int, dict[str, SeriesData]]:
        """The stored series of these runs that are of their current attempt and of today's SPEC, by
        run id (one query); runs without one are absent."""
        attempts = {run.pk: run.attempts for run in runs}
        rows = self.filter(run_id__in=list(attempts), spec=SPEC).values_list("run_id", "attempts", "series")
        return {run_id: SeriesSummary.decode(series) for run_id, n, series in rows if attempts.get(run_id) == n}

    def put(self, series_of: dict[Run, dict[str, SeriesData]]) -> None:
        """Store (or replace) the summaries of these runs, in one query."""
        now = timezone.now()
        self.bulk_create(
            [SeriesSummary(run=run, attempts=run.attempts, spec=SPEC, series=SeriesSummary.encode(series),
                           stored_at=now) for run, series in series_of.items()],
            update_conflicts=True, unique_fields=["run"], update_fields=["attempts", "spec", "series", "stored_at"])


class SeriesSummary(models.Model):
    """A finished run's series of the names the comparison's charts need (series.NEEDED_NAMES),
    downsampled as the charts show them: each series' first, last, minimum and maximum point kept."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="series_summary")
    attempts = models.PositiveIntegerField(help_text="The run's attempt it summarises (Run.attempts).")
    spec = models.CharField(max_length=64, help_text="The names and downsampling it was made with (SPEC).")
    series = models.JSONField(help_text='{name: {"points": [steps, values, walls], '
                                        '"means": [steps, means, counts, walls]}}, column-wise.')
    stored_at = models.DateTimeField(default=timezone.now)

    objects = SeriesSummaryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "series summaries"

    def __str__(self) -> str:
        return f"series of run #{self.run_id}"

    @staticmethod
    def encode(series: dict[str, SeriesData]) -> dict:
        """Column-wise lists (JSON numbers round-trip floats exactly)."""
        return {name: {"points": [list(col) for col in zip(*data.points, strict=True)] or [[], [], []],
                       "means": [list(col) for col in zip(*data.means, strict=True)] or [[], [], [], []]}
                for name, data in series.items()}

    @staticmethod
    def decode(stored: dict) -> dict[str, SeriesData]:
        return {name: SeriesData(points=list(zip(*s["points"], strict=True)), means=list(zip(*s["means"], strict=True)))
                for name, s in stored.items()}
