"""Judge jobs take the lifecycle of every background job (webapp/experiments/jobs.py): claims and sends are
counted, and `error` becomes `message` (why it failed, or what it made: filled in for the jobs done already)."""

from django.db import migrations
from django.db.models.functions import Left

from webapp.experiments.job_migrations import add_attempts_and_sends


def describe_done_jobs(apps, schema_editor):
    JudgeJob = apps.get_model("ratings", "JudgeJob")
    JudgeJob.objects.update(phase=Left("phase", 40))  # to fit the shared field
    for job in JudgeJob.objects.filter(state="done").only("model", "votes", "items"):
        JudgeJob.objects.filter(pk=job.pk).update(
            message=f"pairwise_judge:{job.model} cast {job.votes} votes on {job.items} items.")


class Migration(migrations.Migration):
    dependencies = [("ratings", "0006_judge_jobs")]
    operations = [
        migrations.RenameField("judgejob", "error", "message"),
        *add_attempts_and_sends("judgejob"),
        migrations.RunPython(describe_done_jobs, migrations.RunPython.noop),
    ]
