"""`manage.py store_summaries`: store the downsampled series of finished runs that have none of today's
spec (runs that ended before summaries existed, or whose storing failed, or after a chart needs a new
metric name). Runs store theirs when they end; pages never write."""

from django.core.management.base import BaseCommand

from webapp.compare.loader import store_missing_summaries


class Command(BaseCommand):
    help = "Store the downsampled series of finished runs that lack a current one."

    def handle(self, *args, **options):
        self.stdout.write(f"stored the series of {store_missing_summaries()} runs")
