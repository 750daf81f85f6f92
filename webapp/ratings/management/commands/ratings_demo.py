"""Create a synthetic experiment to rate (no training), optionally with simulated votes.

    manage.py ratings_demo alice                       # alice owns it and can rate it at /ratings/
    manage.py ratings_demo alice --invite bob --votes 300 --hack grpo
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.ratings.demo import make_demo_experiment, simulate_votes
from webapp.ratings.models import Invitation


class Command(BaseCommand):
    help = "Create a demo experiment with samples to rate (no training), and optionally simulated votes."

    def add_arguments(self, parser):
        parser.add_argument("owner", help="username of the experiment's owner (must exist)")
        parser.add_argument("--name", default="Rating demo")
        parser.add_argument("--methods", default="sft,dpo,grpo")
        parser.add_argument("--prompts", type=int, default=12)
        parser.add_argument("--invite", action="append", default=[], help="username to invite as a rater")
        parser.add_argument("--votes", type=int, default=0, help="simulated votes by 3 simulated raters")
        parser.add_argument("--hack", default="", help="a method people dislike although its reward is high")

    def handle(self, *args, **opts):
        users = get_user_model().objects
        owner = users.filter(username=opts["owner"]).first()
        if owner is None:
            raise CommandError(f"no user {opts['owner']!r}")
        methods = tuple(m for m in opts["methods"].split(",") if m)
        exp = make_demo_experiment(owner, name=opts["name"], methods=methods, prompts=opts["prompts"])
        for name in opts["invite"]:
            user = users.filter(username=name).first()
            if user is None:
                raise CommandError(f"no user {name!r}")
            Invitation.objects.get_or_create(experiment=exp, rater=user, defaults={"invited_by": owner})
        if opts["votes"]:
            raters = []
            for k in range(1, 4):
                user, created = users.get_or_create(username=f"simulated-rater-{k}")
                if created:
                    user.set_unusable_password()
                    user.save(update_fields=["password"])
                Invitation.objects.get_or_create(experiment=exp, rater=user, defaults={"invited_by": owner})
                raters.append(user)
            from webapp.ratings.arena import Arena

            quality = {k: 4.0 * (r or 0.0) for k, r in Arena(exp).rewards().items()}
            for run in exp.runs.filter(method=opts["hack"]):
                quality[str(run.pk)] = -2.0  # high reward, but people see through it
            simulate_votes(exp, raters, opts["votes"], quality=quality)
        self.stdout.write(f"experiment {exp.pk}: /experiments/{exp.pk}/rate/  /experiments/{exp.pk}/leaderboard/")
