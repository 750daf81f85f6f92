"""The one lifecycle of background jobs on the queue `io` (dataset uploads, report imports): the row is the
job's only state; it is stored with its upload and published once committed, claimed queued -> running by one
attempt at a time, kept alive by a heartbeat while it runs, and ended done or failed. A job whose message or
worker was lost is sent again by the workers' supervisor (`do_resend_lost_jobs`).

Here, below the apps that hold the concrete jobs (datasets, reports), so that both import it and the workers
find every job model without importing upwards."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.apps import apps
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import close_old_connections, connection, models, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from webapp.experiments.actions import PUBLISH_RETRY, publish_on_commit  # one publish policy for every task
from webapp.experiments.broker import queue_lengths
from webapp.experiments.models import db_now

log = logging.getLogger(__name__)


def send_io_job(task: str, job_id: int) -> None:
    """Publish a job id on the io queue (the tests replace this to record or run what was sent)."""
    from webapp.celery import app

    app.send_task(task, args=(job_id,), queue=settings.PTLAB_IO_QUEUE, retry_policy=PUBLISH_RETRY)


class IoJob(models.Model):
    """A job on the io queue. A subclass names its Celery task (TASK), has an `owner` and a `file` (the
    upload), and says what a server error tells the user (SERVER_ERROR)."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    TASK = ""
    SERVER_ERROR = "The job failed on the server; nothing was saved."
    KEEP_FILE_WHEN_DONE = False  # the upload becomes the result's file (a dataset) rather than being removed

    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent.")
    phase = models.CharField(max_length=40, blank=True)
    message = models.TextField(blank=True, help_text="Why it failed, or what it made.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Starts by a worker (claims).")
    sends = models.PositiveSmallIntegerField(default=0, help_text="Times its id was published on the io queue.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)  # its heartbeat while running, its last send while queued

    class Meta:
        abstract = True
        ordering = ["-created", "-id"]

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)

    def result(self) -> models.Model | None:
        """What the job made (the page links it)."""
        raise NotImplementedError

    def status(self) -> dict:
        """What the job's page polls."""
        made = self.result()
        return {"id": self.pk, "state": self.state, "progress": self.progress, "phase": self.phase,
                "message": self.message, "finished": self.finished, "url": made.get_absolute_url() if made else None}

    # --- creating ---------------------------------------------------------------------------------

    def store(self, upload: UploadedFile, name: str, *, send: bool = True) -> None:
        """Save the upload, then the row (queued); the file is removed if the row is not saved. With `send`,
        the id is published once the row is committed (without it, the caller runs the job)."""
        self.phase, self.progress, self.sends = "waiting for a worker", 5, int(send)
        self.file.save(name, upload, save=False)
        try:
            with transaction.atomic():
                self.save()
        except BaseException:
            self.file.delete(save=False)
            raise
        if send:
            self.publish()

    def publish(self) -> None:
        """Send the id once the current transaction commits. With the broker down the job stays queued and
        is sent again later (do_resend_lost_jobs): nothing here may undo the commit."""
        task = self.TASK
        publish_on_commit(lambda job_id: send_io_job(task, job_id), self.pk, str(self._meta.verbose_name))

    # --- running ----------------------------------------------------------------------------------

    @classmethod
    def claim(cls, job_id: int, phase: str, progress: int) -> IoJob | None:
        """queued -> running for one attempt, or None: a redelivered message for a job already running or
        ended does nothing."""
        if not cls.objects.filter(pk=job_id, state=cls.State.QUEUED).update(
                state=cls.State.RUNNING, attempts=F("attempts") + 1, phase=phase, progress=progress, updated=Now()):
            return None
        return cls.objects.select_related("owner").get(pk=job_id)

    def held(self) -> models.QuerySet:
        """The row while this attempt still holds it (not requeued or failed by the resend since)."""
        return type(self).objects.filter(pk=self.pk, state=self.State.RUNNING, attempts=self.attempts)

    def beat(self) -> bool:
        return bool(self.held().update(updated=Now()))

    def set_phase(self, phase: str, progress: int) -> bool:
        return bool(self.held().update(phase=phase, progress=progress, updated=Now()))

    def end(self, state: str, message: str, rows: models.QuerySet | None = None, **fields) -> bool:
        """running -> done or failed, if `rows` (by default this attempt's hold) still match; the upload is
        removed unless it became the result's file. False if the job was not held any more."""
        drop_file = state == self.State.FAILED or not self.KEEP_FILE_WHEN_DONE
        if not (self.held() if rows is None else rows).update(
                state=state, message=message, progress=100, phase=state, updated=Now(),
                **({"file": ""} if drop_file else {}), **fields):
            return False
        if drop_file and self.file:
            self.file.delete(save=False)
        return True

    # --- recovery ---------------------------------------------------------------------------------

    def send_again(self, rows: models.QuerySet, message: str) -> bool:
        """Back to queued (if `rows` still match) and published again; its page says so."""
        with transaction.atomic():
            if not rows.update(state=self.State.QUEUED, sends=F("sends") + 1, updated=Now(), progress=5,
                               phase=f"sent again (attempt {self.sends + 1})", message=message):
                return False
            self.publish()
        return True

    @classmethod
    def resend_lost(cls, now, *, queue_empty: bool) -> list[str]:
        """Send again the jobs queued for PTLAB_JOB_RESEND_SECONDS while the io queue is empty (the message
        was lost, or the broker was down when it was created), and the running jobs silent for
        PTLAB_REAP_AFTER_SECONDS (their worker died); fail those after PTLAB_MAX_ATTEMPTS starts."""
        done, kind = [], cls._meta.verbose_name
        if queue_empty:
            cutoff = now - timezone.timedelta(seconds=settings.PTLAB_JOB_RESEND_SECONDS)
            for job in cls.objects.filter(state=cls.State.QUEUED, updated__lt=cutoff):
                rows = cls.objects.filter(pk=job.pk, state=cls.State.QUEUED, updated__lt=cutoff)
                if job.send_again(rows, job.message):
                    done.append(f"{kind} #{job.pk}: its message was lost: sent again")
        silent = now - timezone.timedelta(seconds=settings.PTLAB_REAP_AFTER_SECONDS)
        most = settings.PTLAB_MAX_ATTEMPTS
        for job in cls.objects.filter(state=cls.State.RUNNING, updated__lt=silent):
            rows = job.held().filter(updated__lt=silent)  # a beat since then: still alive
            if job.attempts >= most:
                if job.end(cls.State.FAILED, f"The io worker was lost {job.attempts} times; nothing was saved.", rows):
                    done.append(f"{kind} #{job.pk}: the io worker was lost {job.attempts} times: failed")
            elif job.send_again(rows, f"Its io worker was lost (attempt {job.attempts} of {most}); sent again."):
                done.append(f"{kind} #{job.pk}: its io worker was lost: sent again")
        return done


def job_models() -> list[type[IoJob]]:
    return [model for model in apps.get_models() if issubclass(model, IoJob)]


def do_resend_lost_jobs(now=None) -> list[str]:
    """Resend lost io jobs of every kind (IoJob.resend_lost). Safe anywhere, any number of times at once:
    every change is a conditional update, and a job sent twice runs once (the claim)."""
    now = now or db_now()  # never this host's clock: heartbeats are written with the database's
    queue = settings.PTLAB_IO_QUEUE
    queue_empty = queue_lengths([queue]).get(queue) == 0  # not when messages wait, or the broker is down
    done = [line for model in job_models() for line in model.resend_lost(now, queue_empty=queue_empty)]
    for line in done:
        log.warning("resend: %s", line)
    return done


class Heartbeat(threading.Thread):
    """Beats for a running job (a long check writes nothing else), in its own connection."""

    def __init__(self, job: IoJob):
        super().__init__(name=f"heartbeat-{job._meta.model_name}-{job.pk}", daemon=True)
        self.job, self.stopping = job, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.wait(settings.PTLAB_HEARTBEAT_SECONDS):
                try:
                    self.job.beat()
                except Exception:  # a database hiccup must not end the beat; the next one may pass
                    log.exception("heartbeat of %s failed", self.job)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection


Work = Callable[[IoJob], tuple[str, str, dict]]


def run_job(model: type[IoJob], job_id: int, phase: str, progress: int, work: Work) -> str:
    """Claim the job, run `work(job)` -> (state, message, fields of the row) with a heartbeat, end it.
    Returns its state, or "not queued" (a duplicate delivery) or "lost" (requeued or failed meanwhile)."""
    job = model.claim(job_id, phase, progress)
    if job is None:
        return "not queued"
    beat = Heartbeat(job)
    beat.start()
    try:
        state, message, fields = work(job)
    except Exception:
        log.exception("%s failed", job)
        state, message, fields = model.State.FAILED, model.SERVER_ERROR, {}
    finally:
        beat.stopping.set()
        beat.join()
    if not job.end(state, message, **fields):
        log.warning("%s: not held any more (its worker was taken for lost); its outcome was not recorded", job)
        return "lost"
    return state
