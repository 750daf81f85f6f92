from django.db import migrations

from webapp.experiments.job_migrations import sends_on_its_queue


class Migration(migrations.Migration):
    dependencies = [("reports", "0004_job_attempts")]
    operations = sends_on_its_queue("importjob")
