"""The one lifecycle of background jobs, each kind on its own queue (dataset uploads and report imports on
`io`, judge jobs on `try`): the row is the job's only state; it is published once committed, claimed queued
-> running by one attempt at a time, kept alive by a heartbeat while it runs, and ended done or failed, only
by the attempt that still holds it; a job's write is fenced the same way (`end_with`, `holding`). A job whose
message or worker was lost is sent again by the supervisor of the workers serving its queue, or `manage.py
reap` (`do_resend_lost_jobs`).

Here, below the apps that hold the concrete jobs (datasets, reports, ratings), so that all import it and the
workers find every job model without importing upwards."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

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
WAITING = "waiting for a worker"

Outcome = tuple[str, str, dict]  # (state, message, fields of the row) a job ends with


def send_job(task: str, queue: str, job_id: int) -> None:
    """Publish a job id on its queue (the tests replace this to record or run what was sent)."""
    from webapp.celery import app

    app.send_task(task, args=(job_id,), queue=queue, retry_policy=PUBLISH_RETRY)


class JobLost(Exception):
    """This attempt does not hold its job any more (the resend took it for lost): it must write nothing."""


class BackgroundJob(models.Model):
    """A job on a queue. A subclass names its Celery task (TASK) and its queue (`queue()`), and says what a
    server error tells the user (SERVER_ERROR)."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    TASK = ""
    SERVER_ERROR = "The job failed on the server; nothing was saved."

    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent.")
    phase = models.CharField(max_length=40, blank=True)
    message = models.TextField(blank=True, help_text="Why it failed, or what it made.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Starts by a worker (claims).")
    sends = models.PositiveSmallIntegerField(default=0, help_text="Times its id was published on its queue.")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)  # its heartbeat while running, its last send while queued

    class Meta:
        abstract = True
        ordering = ["-created", "-id"]

    @classmethod
    def queue(cls) -> str:
        """The queue its id is published on, served by the workers that run it (and resend it)."""
        return settings.PTLAB_IO_QUEUE

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)

    # --- creating ---------------------------------------------------------------------------------

    @classmethod
    def create_queued(cls, **fields) -> BackgroundJob:
        """Save a queued job (in the caller's transaction) and publish its id once committed."""
        job = cls.objects.create(phase=WAITING, progress=5, sends=1, **fields)
        job.publish()
        return job

    def publish(self) -> None:
        """Send the id once the current transaction commits. With the broker down the job stays queued and
        is sent again later (do_resend_lost_jobs): nothing here may undo the commit."""
        task, queue = self.TASK, self.queue()
        publish_on_commit(lambda job_id: send_job(task, queue, job_id), self.pk, str(self._meta.verbose_name))

    # --- running ----------------------------------------------------------------------------------

    @classmethod
    def claim_fields(cls) -> dict:
        """Fields a subclass writes with each claim."""
        return {}

    def end_fields(self, state: str) -> dict:
        """Fields a subclass writes with the end."""
        return {}

    def after_end(self, state: str) -> None:
        """Called once the end is written (inside the end's transaction, if any)."""

    @classmethod
    def claim(cls, job_id: int, phase: str, progress: int) -> BackgroundJob | None:
        """queued -> running for one attempt, or None: a redelivered message for a job already running or
        ended does nothing."""
        if not cls.objects.filter(pk=job_id, state=cls.State.QUEUED).update(
                state=cls.State.RUNNING, attempts=F("attempts") + 1, phase=phase, progress=progress, updated=Now(),
                **cls.claim_fields()):
            return None
        return cls.objects.get(pk=job_id)

    def held(self) -> models.QuerySet:
        """The row while this attempt still holds it (not requeued or failed by the resend since)."""
        return type(self).objects.filter(pk=self.pk, state=self.State.RUNNING, attempts=self.attempts)

    def beat(self) -> bool:
        return bool(self.held().update(updated=Now()))

    def set_phase(self, phase: str, progress: int, **fields) -> bool:
        return bool(self.held().update(phase=phase, progress=progress, updated=Now(), **fields))

    @contextmanager
    def holding(self) -> Iterator[None]:
        """One transaction that first takes the job's row with a conditional update (running, this attempt;
        the row stays locked until the commit, so the resend waits and then finds it alive), or raises JobLost:
        an attempt that lost its job writes nothing in it."""
        with transaction.atomic():
            if not self.held().update(updated=Now()):
                raise JobLost(f"{self}: not held by attempt {self.attempts} any more")
            yield

    def end_with(self, write: Callable[[], Outcome]) -> Outcome:
        """Run `write()` (the job's writes) -> its outcome, and end the job with it, in one transaction held as
        `holding` says: a lost attempt writes nothing (JobLost), and no write is committed without its job
        ending, so the job records exactly one result however many attempts ran."""
        with self.holding():
            state, message, fields = write()
            if not self.end(state, message, **fields):  # never while the row is taken; if so, roll back
                raise JobLost(f"{self}: not held by attempt {self.attempts} at its end")
        return state, message, fields

    def end(self, state: str, message: str, rows: models.QuerySet | None = None, **fields) -> bool:
        """running -> done or failed, if `rows` (by default this attempt's hold) still match. False if the job
        was not held any more."""
        if not (self.held() if rows is None else rows).update(
                state=state, message=message, progress=100, phase=state, updated=Now(),
                **self.end_fields(state), **fields):
            return False
        self.state = state
        self.after_end(state)
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
        """Send again the jobs queued for PTLAB_JOB_RESEND_SECONDS while their queue is empty (the message
        was lost, or the broker was down when it was created), and the running jobs silent for
        PTLAB_REAP_AFTER_SECONDS (their worker died); fail those after PTLAB_MAX_ATTEMPTS starts."""
        done, kind, queue = [], cls._meta.verbose_name, cls.queue()
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
                if job.end(cls.State.FAILED, f"The {queue} worker was lost {job.attempts} times; nothing was saved.",
                           rows):
                    done.append(f"{kind} #{job.pk}: the {queue} worker was lost {job.attempts} times: failed")
            elif job.send_again(rows, f"Its {queue} worker was lost (attempt {job.attempts} of {most}); sent again."):
                done.append(f"{kind} #{job.pk}: its {queue} worker was lost: sent again")
        return done


class FileJob(BackgroundJob):
    """A job on an uploaded file: a subclass has an `owner` and a `file` (the upload), and says what the page
    links (`result()`). The upload is removed when the job ends, unless it became the result's file."""

    KEEP_FILE_WHEN_DONE = False  # the upload becomes the result's file (a dataset) rather than being removed

    class Meta(BackgroundJob.Meta):
        abstract = True

    def result(self) -> models.Model | None:
        """What the job made (the page links it)."""
        raise NotImplementedError

    def status(self) -> dict:
        """What the job's page polls."""
        made = self.result()
        return {"id": self.pk, "state": self.state, "progress": self.progress, "phase": self.phase,
                "message": self.message, "finished": self.finished, "url": made.get_absolute_url() if made else None}

    def store(self, upload: UploadedFile, name: str, *, send: bool = True) -> None:
        """Save the upload, then the row (queued); the file is removed if the row is not saved. With `send`,
        the id is published once the row is committed (without it, the caller runs the job)."""
        self.phase, self.progress, self.sends = WAITING, 5, int(send)
        self.file.save(name, upload, save=False)
        try:
            with transaction.atomic():
                self.save()
        except BaseException:
            self.file.delete(save=False)
            raise
        if send:
            self.publish()

    def drops_file(self, state: str) -> bool:
        return state == self.State.FAILED or not self.KEEP_FILE_WHEN_DONE

    def end_fields(self, state: str) -> dict:
        return {"file": ""} if self.drops_file(state) else {}

    def after_end(self, state: str) -> None:
        if self.drops_file(state) and self.file:  # nothing reads it any more, even if the end rolls back
            self.file.delete(save=False)


def job_models(queues: Iterable[str] | None = None) -> list[type[BackgroundJob]]:
    """Every kind of job, or those published on `queues`."""
    kinds = [model for model in apps.get_models() if issubclass(model, BackgroundJob)]
    return kinds if queues is None else [model for model in kinds if model.queue() in set(queues)]


def do_resend_lost_jobs(queues: Iterable[str] | None = None, now=None) -> list[str]:
    """Resend lost jobs of every kind on `queues` (default: all; BackgroundJob.resend_lost), each kind's
    queued jobs only while its own queue is empty. Safe anywhere, any number of times at once: every change
    is a conditional update, and a job sent twice runs once (the claim)."""
    kinds = job_models(queues)
    if not kinds:
        return []
    now = now or db_now()  # never this host's clock: heartbeats are written with the database's
    lengths = queue_lengths(sorted({kind.queue() for kind in kinds}))
    # a queue is empty only when the broker says so: not when messages wait, nor when it is down
    done = [line for kind in kinds for line in kind.resend_lost(now, queue_empty=lengths.get(kind.queue()) == 0)]
    for line in done:
        log.warning("resend: %s", line)
    return done


class Heartbeat(threading.Thread):
    """Beats for a running job (a long check writes nothing else), in its own connection."""

    def __init__(self, job: BackgroundJob):
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


Work = Callable[[BackgroundJob], Outcome]


def run_job(model: type[BackgroundJob], job_id: int, phase: str, progress: int, work: Work) -> str:
    """Claim the job, run `work(job)` -> its outcome with a heartbeat, and end the job with it (unless `work`
    ended it with its write: `end_with`). Returns its state, or "not queued" (a duplicate delivery) or "lost"
    (requeued or failed meanwhile: its outcome, and any write fenced by `holding`, was not recorded)."""
    job = model.claim(job_id, phase, progress)
    if job is None:
        return "not queued"
    beat = Heartbeat(job)
    beat.start()
    try:
        state, message, fields = work(job)
    except JobLost:
        state = None
    except Exception:
        log.exception("%s failed", job)
        state, message, fields = model.State.FAILED, model.SERVER_ERROR, {}
    finally:
        beat.stopping.set()
        beat.join()
    if job.finished:  # ended by its own write
        return job.state
    if state is None or not job.end(state, message, **fields):
        log.warning("%s: not held any more (its worker was taken for lost); its outcome was not recorded", job)
        return "lost"
    return state
