"""Schema changes that every background job table takes alike (datasets' UploadJob, reports' ImportJob,
ratings' JudgeJob), written once for the migrations of those apps. Migrations replay these as they are: never edit one, add a new function."""

from django.db import migrations, models


def add_attempts_and_sends(model_name: str) -> list:
    """The counters of webapp/experiments/jobs.py (claims by a worker, sends on the queue), and its help
    text for `message`."""
    counter = models.PositiveSmallIntegerField
    return [
        migrations.AddField(model_name, "attempts", counter(default=0, help_text="Starts by a worker (claims).")),
        migrations.AddField(model_name, "sends",
                            counter(default=0, help_text="Times its id was published on the io queue.")),
        migrations.AlterField(model_name, "message", models.TextField(blank=True,
                                                                      help_text="Why it failed, or what it made.")),
    ]


def sends_on_its_queue(model_name: str) -> list:
    """Jobs of other queues share the lifecycle (webapp/experiments/jobs.py): `sends` counts sends on the job's
    own queue."""
    return [migrations.AlterField(model_name, "sends", models.PositiveSmallIntegerField(
        default=0, help_text="Times its id was published on its queue."))]
