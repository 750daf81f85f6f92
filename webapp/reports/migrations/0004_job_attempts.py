from django.db import migrations

from webapp.experiments.job_migrations import add_attempts_and_sends


class Migration(migrations.Migration):
    dependencies = [("reports", "0003_import_job")]
    operations = add_attempts_and_sends("importjob")
