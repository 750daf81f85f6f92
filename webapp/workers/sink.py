"""The worker's MetricSink (training.callbacks): metrics, samples, progress, checkpoints and the final
model, each written only while this attempt still holds the run.

Every write runs in a transaction that first updates the run's row on the condition (state running, same
`attempts`): that row lock keeps the reaper from taking the run away in the middle of the write, and a run
already taken makes the write a no-op. Then the sink drops every later write and asks the trainer to stop."""

from __future__ import annotations

import math
import time
from pathlib import Path

from django.db import connection, transaction
from django.db.models.functions import Now

from training.folders import replace_folder
from webapp.experiments.models import LOG_LINES, Metric, Run, Sample

SHOWN = ("eval/reward", "eval/kl")  # what the log line of an evaluation shows
LOGGED_PHASES = ("loading", "saving", "done")


class DatabaseSink:
    progress_every = 0.5  # seconds between progress writes (phase changes are written at once)
    stop_check_every = 1.0  # seconds between reads of Run.stop_requested

    def __init__(self, run: Run):
        self.run_id = run.pk
        self.trial = run.trial  # a sweep trial: checked for pruning at each evaluation
        self.attempt = run.attempts  # the claim token; also names the attempt's private folder
        self.lines = run.log.splitlines()
        self.lost = False  # the run was taken away from this attempt
        self.stop = False
        self._phase = None
        self._last_progress = -math.inf
        self._last_check = -math.inf

    # --- MetricSink ---------------------------------------------------------------------------------
    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        now = time.time()
        rows = [Metric(run_id=self.run_id, step=step, name=k, value=_json_number(v), wall_time=now)
                for k, v in metrics.items()]
        evals = {k: _json_number(v) for k, v in metrics.items() if k.startswith("eval/")}
        if not evals:
            self._while_held(lambda: Metric.objects.bulk_create(rows))
            return
        shown = " ".join(f"{k}={float(metrics[k]):.4g}" for k in SHOWN if k in metrics)
        self._while_held(lambda: Metric.objects.bulk_create(rows),
                         latest={**evals, "step": step}, log=self._log(f"step {step}: {shown}".rstrip()))

    def log_samples(self, step: int, samples) -> None:
        rows = [Sample(run_id=self.run_id, step=step, prompt_id=s.prompt_id, index=s.index,
                       prompt=storable(s.prompt), completion=storable(s.completion),
                       reward=_json_number(s.reward) or 0.0) for s in samples]
        self._while_held(lambda: Sample.objects.bulk_create(rows, batch_size=500))
        if self.trial is not None and step > 0 and not (self.stop or self.lost):
            self._prune_check(step)

    def _prune_check(self, step: int) -> None:
        """A sweep trial whose validation reward so far is below its predecessors' median stops here (it
        ends cancelled, its log saying it was pruned, and the sweep proposes the next trial)."""
        from webapp.experiments.actions import PRUNED, trial_should_prune

        run = Run.objects.select_related("experiment").filter(pk=self.run_id).first()
        if run is not None and trial_should_prune(run):
            self.stop = True
            self._write(log=self._log(f"{PRUNED} {step}: its validation reward is below the median of the "
                                      "earlier trials at this step"))

    def publish(self, source: str | Path, target: str | Path) -> bool:
        """Move the folder `source` (this attempt's checkpoint or final model) to `target`, replacing what is
        there, only while this attempt holds the run."""
        return self._while_held(lambda: replace_folder(Path(source), Path(target)))

    def progress(self, p) -> None:
        now = time.monotonic()
        changed = p.phase != self._phase
        if not changed and now - self._last_progress < self.progress_every and p.step < p.total:
            return
        fields = {"step": p.step, "total": p.total, "eta_s": p.eta_s, "phase": p.phase, "heartbeat_at": Now()}
        if changed and (p.phase in LOGGED_PHASES or p.phase == "training" and self._phase in (None, "loading")):
            fields["log"] = self._log(f"{p.phase} at step {p.step} of {p.total}")
        self._phase, self._last_progress = p.phase, now
        self._write(**fields)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.lost and not self.stop and now - self._last_check >= self.stop_check_every:
            self._last_check = now
            requested = self._mine().values_list("stop_requested", flat=True).first()
            if requested is None:
                self.lost = True
            elif requested:
                self.stop = True
                self._write(log=self._log("stop requested: stopping after this step (saving the model; no final evaluation)"))
        return self.stop or self.lost

    def truncate_after(self, step: int) -> None:
        """Resuming from the checkpoint at `step` (-1: a fresh start): what was logged after it is trained,
        and logged, again, so it goes (an earlier attempt's rows included)."""
        def forget() -> None:
            for model in (Metric, Sample):
                rows = model.objects.filter(run_id=self.run_id)
                (rows.filter(step__gt=step) if step >= 0 else rows).delete()

        self._while_held(forget)
        last = (Metric.objects.filter(run_id=self.run_id, name__startswith="eval/")
                .order_by("-step").values_list("step", flat=True).first())
        latest = {}
        if last is not None:
            rows = Metric.objects.filter(run_id=self.run_id, name__startswith="eval/", step=last)
            latest = {name: _json_number(v) for name, v in rows.values_list("name", "value")} | {"step": last}
        line = f"resuming from the checkpoint at step {step}" if step >= 0 else "starting from step 0"
        self._write(latest=latest, step=max(step, 0), log=self._log(line))

    # --- helpers ------------------------------------------------------------------------------------
    def note(self, line: str) -> None:
        self._write(log=self._log(line))

    def _log(self, line: str) -> str:
        self.lines = (self.lines + [storable(line)])[-LOG_LINES:]
        return "\n".join(self.lines)

    def _mine(self):
        return Run.objects.filter(pk=self.run_id, state=Run.State.RUNNING, attempts=self.attempt)

    def _write(self, **fields) -> None:
        # A conditional UPDATE of just these columns (never a whole-row save): it also tells us
        # whether this attempt still holds the run.
        if not self.lost and not self._mine().update(progress_at=Now(), **fields):
            self.lost = True

    def _while_held(self, write, **fields) -> bool:
        """`write()` in one transaction with a conditional update of the run's row (progress time and
        `fields`): done only if this attempt holds the run, and the row stays locked until it commits.
        Returns False, having written nothing, once the run was taken away."""
        if self.lost:
            return False
        no_fsync_wait()
        with transaction.atomic():
            if not self._mine().update(progress_at=Now(), **fields):
                self.lost = True
                return False
            write()
        return True


def no_fsync_wait() -> None:
    """On PostgreSQL, let this run process commit without waiting for the WAL to reach the disk (8 ms a
    commit here, which capped ingest near 1,000 points/s). A server crash could lose the last fraction of
    a second of commits, never corrupt anything (the run is then reaped and resumed); a worker crash loses
    nothing. Set once per database connection (a reconnect gets it again). SQLite: WAL, synchronous=NORMAL."""
    if connection.vendor != "postgresql":
        return
    connection.ensure_connection()
    raw = connection.connection
    if getattr(connection, "_ptlab_relaxed", None) is not raw:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")
        connection._ptlab_relaxed = raw


def storable(text: str) -> str:
    """Model text as every database keeps it: a sampled byte token can decode to NUL, which PostgreSQL's
    text columns refuse (the whole write, and with it the run, would fail); it becomes U+FFFD."""
    return text.replace("\x00", "\ufffd")


def _json_number(x) -> float | None:
    """NaN and infinity become None: JSON has neither (PostgreSQL's jsonb refuses them) and SQLite
    stores NaN as NULL anyway; the same on every database."""
    x = float(x)
    return x if math.isfinite(x) else None
