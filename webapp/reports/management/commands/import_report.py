import json

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from training import safejson
from webapp.reports.importing import ReportError, do_import_report


class Command(BaseCommand):
    help = "Import a ptlab report (JSON) as a new experiment owned by --user."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The report's JSON file.")
        parser.add_argument("--user", help="Username of the owner (default: the only superuser).")

    def handle(self, *args, file, user=None, **options):
        users = get_user_model().objects
        try:
            owner = users.get(username=user) if user else users.get(is_superuser=True)
        except (users.model.DoesNotExist, users.model.MultipleObjectsReturned):
            raise CommandError("Name the owner with --user USERNAME.") from None
        try:
            with open(file, encoding="utf-8-sig") as f:
                doc = safejson.loads(f.read(), max_depth=settings.PTLAB_MAX_JSON_DEPTH)
            experiment = do_import_report(doc, owner)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ReportError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Imported experiment #{experiment.pk} \"{experiment.name}\" "
                          f"({experiment.runs.count()} runs) for {owner.get_username()}.")
