"""`manage.py reap`: requeue or fail runs whose worker died, kill runs that ignored a cancel, resend
messages the broker lost, and the same for background jobs (uploads, imports, judge jobs).

Workers do this themselves every heartbeat; this command is for cron, or when no worker is up."""

import time

from django.core.management.base import BaseCommand

from webapp.experiments.jobs import do_resend_lost_jobs
from webapp.experiments.models import Experiment
from webapp.workers.recovery import do_reap, do_resend_lost


class Command(BaseCommand):
    help = "Requeue (or fail) running runs whose worker stopped sending heartbeats."

    def add_arguments(self, parser):
        parser.add_argument("--loop", type=float, metavar="SECONDS", help="repeat every SECONDS until interrupted")

    def handle(self, *args, loop=None, **options):
        while True:
            queues = sorted({"train", *Experiment.objects.values_list("queue", flat=True).distinct()})
            for line in do_reap() + do_resend_lost(queues) + do_resend_lost_jobs():
                self.stdout.write(line)
            if not loop:
                return
            time.sleep(loop)
