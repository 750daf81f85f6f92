"""Lost io jobs are sent again, for real: a real Redis broker, a real Celery worker on the io queue, the test
database shared with it. Three jobs are waiting before the worker starts: an import created while the broker
was unreachable (never sent), an upload whose message Redis lost, and an upload whose worker died while
running it. The io worker's supervisor sends each again, and the worker does all three."""

from __future__ import annotations

import json

import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from test_import_integration import (  # noqa: F401  (fixtures: jobs really go to the broker)
    finished,
    import_jobs_sent,
    report_to_import,
    upload_jobs_sent,
)
from test_integration import (  # noqa: F401  (fixtures)
    WorkerProcess,
    _free_port,
    broker,
    queue,
    redis_url,
    wait_for,
)

from tests.celery_broker import celery_app_on
from webapp.datasets.jobs import do_create_upload_job
from webapp.datasets.models import UploadJob
from webapp.reports.jobs import do_create_import_job
from webapp.reports.models import ImportJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.timeout(300)]
State = ImportJob.State


def rows(n: int) -> SimpleUploadedFile:
    body = "".join(json.dumps({"prompt": f"{a} plus 1?", "completion": str(a + 1)}) + "\n" for a in range(n))
    return SimpleUploadedFile("d.jsonl", body.encode())


def test_lost_io_jobs_are_sent_again_and_done(broker, queue, settings, artifact_root, tmp_path,  # noqa: F811
                                              django_user_model):
    settings.PTLAB_IO_QUEUE = queue
    bob, doc = report_to_import(django_user_model)
    with celery_app_on(f"redis://127.0.0.1:{_free_port()}/0"):  # nothing listens there
        unsent = do_create_import_job(bob, SimpleUploadedFile("report.json", json.dumps(doc).encode()))
    client = redis.Redis.from_url(broker)
    assert client.llen(queue) == 0

    lost = do_create_upload_job(bob, "lost message", "train", rows(30))
    assert client.llen(queue) == 1  # sent once committed (this test runs in autocommit) ...
    client.delete(queue)  # ... and lost, as in a Redis restarted without persistence

    orphan = do_create_upload_job(bob, "dead worker", "train", rows(12), send=False)
    assert UploadJob.claim(orphan.pk, "checking every row", 20) is not None  # by a worker that then died
    UploadJob.objects.filter(pk=orphan.pk).update(updated=timezone.now() - timezone.timedelta(hours=1))

    io = WorkerProcess("io-resend", queue, broker, tmp_path,
                       env={"PTLAB_IO_QUEUE": queue, "PTLAB_JOB_RESEND_SECONDS": "1", "PTLAB_PRELOAD_TRAINING": "0",
                            "PTLAB_ARTIFACT_ROOT": str(artifact_root)})
    try:
        for job in (unsent, lost, orphan):
            wait_for(lambda job=job: finished(job), 120, f"{job} to be sent again and done", io)
    finally:
        io.stop()
    assert (unsent.state, unsent.sends, unsent.attempts) == (State.DONE, 2, 1), unsent.message  # tried, then resent
    assert unsent.experiment.owner == bob and unsent.experiment.runs.count() == len(doc["runs"])
    assert (lost.state, lost.sends, lost.attempts, lost.dataset.rows) == (State.DONE, 2, 1, 30), lost.message
    assert (orphan.state, orphan.attempts, orphan.dataset.rows) == (State.DONE, 2, 12), orphan.message
    assert "resend: upload job" in io.text() and f"its {queue} worker was lost: sent again" in io.text()
