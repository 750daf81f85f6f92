"""What a Celery worker's main process does besides consuming: announce itself, beat, and reap.

The supervisor is a thread in the main process, not a periodic task: a worker runs one training
run at a time (-c 1), so a task queued behind a run of several hours would never reap anything.
Every worker reaps; the conditional updates make concurrent reapers harmless."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import threading

from celery.signals import worker_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import connection
from django.utils import timezone

from webapp.experiments.jobs import do_resend_lost_jobs
from webapp.experiments.models import Worker
from webapp.workers.recovery import do_reap, do_requeue_orphans, do_resend_lost

log = logging.getLogger(__name__)
FORGET_AFTER = timezone.timedelta(days=1)  # rows of workers silent this long are deleted


def gpus() -> tuple[str, int | None, int]:
    """(name, memory in MiB) of the first visible GPU and how many are visible (CUDA_VISIBLE_DEVICES, else all),
    or ("CPU", None, 0). Asks nvidia-smi, never torch: initialising CUDA in the main process would break CUDA
    in the forked pool processes."""
    if not shutil.which("nvidia-smi"):
        return "CPU", None, 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    cmd = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
    if visible:
        cmd.append(f"--id={','.join(visible)}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout
        lines = [line for line in out.splitlines() if line.strip()]
        name, memory = lines[0].rsplit(",", 1)
        return name.strip(), int(float(memory)), len(lines)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return "CPU", None, 0


class Supervisor(threading.Thread):
    def __init__(self, hostname: str, queues: str):
        super().__init__(name="ptlab-supervisor", daemon=True)
        self.hostname, self.queues = hostname, queues
        self.gpu, self.gpu_memory_mb, self.gpu_count = gpus()
        self.stopping = threading.Event()

    def run(self) -> None:
        Worker.objects.filter(hostname=self.hostname).update(current_run=None, started_at=timezone.now())
        while True:
            self.tick()
            if self.stopping.wait(settings.PTLAB_HEARTBEAT_SECONDS):
                return

    def tick(self) -> None:
        try:
            Worker.objects.beat(self.hostname, gpu=self.gpu, gpu_memory_mb=self.gpu_memory_mb, gpu_count=self.gpu_count,
                                queues=self.queues, pid=os.getpid())
            do_reap()
            do_resend_lost(self.queues.split(","))
            do_resend_lost_jobs(self.queues.split(","))  # the jobs of its queues: the io jobs, the judge jobs
            Worker.objects.filter(last_heartbeat__lt=timezone.now() - FORGET_AFTER).delete()
        except Exception:  # keep supervising through a database or broker hiccup
            log.exception("worker supervisor tick failed")
        finally:
            # Never keep a connection open across the pool's forks of new child processes.
            connection.close()


_supervisor: Supervisor | None = None


@worker_init.connect
def preload_training(**kwargs) -> None:
    """Import torch, transformers and TRL once in the main process: the pool's child, and the process it
    forks for each run (fresh_process.py), inherit them loaded instead of spending seconds importing them.
    Importing does not initialise CUDA, so the forked processes can still use the GPU.

    Then freeze what was imported out of the garbage collector's sight: Celery's pool runs gc.collect()
    before it forks its child, which otherwise walks those ~400,000 objects (0.3-0.6 s on an idle 2-core
    machine, more under load), and so would every full collection in the run's process, holding the GIL (and copying the pages it touches) while the run's heartbeat thread waits:
    0.4 s idle, 0.8 s at load 5, ~0.02 s frozen (bench/heartbeat_stall.py)."""
    if settings.PTLAB_PRELOAD_TRAINING:
        import training.runner  # noqa: F401
    gc.collect()
    gc.freeze()


@worker_ready.connect
def start_supervisor(sender, **kwargs) -> None:
    global _supervisor
    queues = ",".join(sorted(q.name for q in sender.task_consumer.queues)) if sender.task_consumer else ""
    _supervisor = Supervisor(sender.hostname, queues)
    _supervisor.start()
    log.info("ptlab worker %s: %s, queues %s", sender.hostname, _supervisor.gpu, queues)


@worker_shutdown.connect
def forget_worker(sender, **kwargs) -> None:
    if _supervisor is not None:
        _supervisor.stopping.set()
        _supervisor.join(timeout=5)
        do_requeue_orphans(_supervisor.hostname)  # the pool has stopped: nothing of ours is still training
        Worker.objects.filter(hostname=_supervisor.hostname).delete()
        connection.close()
