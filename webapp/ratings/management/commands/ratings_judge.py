"""Let a local judge vote on an experiment's rated items (calibration), or label more pairs once calibrated:

    manage.py ratings_judge 12 --model tiny             # votes on every item people voted on, both orders
    manage.py ratings_judge 12 --model tiny --more 200  # more pairs, only above the owner's threshold
"""

from django.core.management.base import BaseCommand, CommandError

from webapp.experiments.models import Experiment
from webapp.ratings.judge import calibration, do_judge_more, do_judge_votes, local_judge


class Command(BaseCommand):
    help = "A local pairwise judge votes on an experiment's items (marked as the judge's)."

    def add_arguments(self, parser):
        parser.add_argument("experiment", type=int)
        parser.add_argument("--model", default="tiny")
        parser.add_argument("--name", default="")
        parser.add_argument("--more", type=int, default=0, help="Label this many unrated items (needs calibration).")

    def handle(self, *args, **opts):
        experiment = Experiment.objects.filter(pk=opts["experiment"]).first()
        if experiment is None:
            raise CommandError("no such experiment")
        name = opts["name"] or f"pairwise_judge:{opts['model']}"
        judge = local_judge(opts["model"])
        try:
            n = do_judge_more(experiment, judge, name, opts["more"]) if opts["more"] else \
                do_judge_votes(experiment, judge, name)
        except PermissionError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(f"{name}: {n} votes")
        for c in calibration(experiment):
            self.stdout.write(f"{c.judge}: {c.items} items, agreement {c.percent}, kappa {c.kappa} "
                              f"[{c.kappa_low}, {c.kappa_high}], allowed: {c.allowed}")
