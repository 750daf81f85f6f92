"""The fields judge jobs share with every background job, as that lifecycle declares them (after 0007 made the
data fit them, in a transaction of its own)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("ratings", "0007_judge_jobs_share_the_job_lifecycle")]
    operations = [
        migrations.AlterField("judgejob", "sends", models.PositiveSmallIntegerField(
            default=0, help_text="Times its id was published on its queue.")),
        migrations.AlterField("judgejob", "phase", models.CharField(blank=True, max_length=40)),
        migrations.AlterField("judgejob", "state", models.CharField(
            choices=[("queued", "Queued"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")],
            default="queued", max_length=10)),
        migrations.AlterField("judgejob", "updated", models.DateTimeField(auto_now=True)),
    ]
