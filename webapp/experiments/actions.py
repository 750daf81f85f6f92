"""State changes that touch several rows, each under one transaction (`do_*`).

Every transition out of `running` is a conditional UPDATE on (state, attempts): whoever loses a race
(a clean finish against a forced cancel, a slow worker against the reaper) changes nothing."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from training.config import ConfigError
from webapp.experiments import sweeps
from webapp.experiments.models import Experiment, Run
from webapp.experiments.quotas import check_quotas

log = logging.getLogger(__name__)
State = Run.State


TRAIN_TASK = "webapp.workers.tasks.train_run"  # by name: the domain never imports the worker runtime
# kombu's Redis transport serves priority 0 before 3: a run sent again (requeued after its worker died, resumed)
# goes ahead of the runs queued after it first was.
FIRST_PRIORITY, AHEAD_PRIORITY = 3, 0
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def publish_on_commit(send, pk: int, what: str) -> None:
    """Call `send(pk)` (publish a job's id) once the current transaction has committed. With the broker down the
    row stays queued and a warning is logged: what was saved is never undone by a broker outage."""

    def publish() -> None:
        try:
            send(pk)
        except Exception:  # kombu/redis raise several types for "no broker"; nothing here may undo the commit
            log.warning("%s #%s: the broker is unavailable; it stays queued", what, pk, exc_info=True)

    transaction.on_commit(publish)


def send_to_workers(run_id: int, queue: str, priority: int = FIRST_PRIORITY) -> None:
    """Publish the run id on `queue` (the tests replace this to record what was sent)."""
    from webapp.celery import app

    app.send_task(TRAIN_TASK, args=(run_id,), queue=queue, priority=priority, retry_policy=PUBLISH_RETRY)


def enqueue(run: Run, queue: str, *, ahead: bool = False) -> None:
    """Send the run id to the workers once the transaction that made it `queued` has committed. With the
    broker down the run stays queued, and the workers' resend sends it when the broker is back
    (PTLAB_RESEND_AFTER_SECONDS): what was saved is never undone by a broker outage."""
    run_id = run.pk
    Run.objects.filter(pk=run_id).update(queued_at=Now())
    priority = AHEAD_PRIORITY if ahead else FIRST_PRIORITY

    def send() -> None:
        try:
            send_to_workers(run_id, queue, priority)
        except Exception:  # kombu/redis raise several types for "no broker"; nothing here may undo the commit
            log.warning("run #%s: the broker is unavailable; it stays queued and is sent when the broker is back",
                        run_id, exc_info=True)

    transaction.on_commit(send)


def do_create_experiment(experiment: Experiment, dataset: UploadedFile | None = None, *,
                         quotas: bool = False) -> Experiment:
    """Save an (unsaved, validated) experiment with its runs: one per method and seed. With
    `rl_from_sft`, the other methods wait for the SFT run of their seed and start from its model.
    `quotas`: check the owner's quotas in the same transaction, the owner locked (raises QuotaExceeded)."""
    config = sweeps.from_settings(experiment.sweep)
    if config is not None and experiment.rl_from_sft:
        raise ConfigError("sweep", "a sweep cannot start the other methods from SFT (rl_from_sft)")
    with transaction.atomic():
        if quotas:
            check_quotas(experiment.owner, len(experiment.methods) * experiment.seeds)
        if dataset is not None:
            experiment.dataset.save(Path(dataset.name).name, dataset, save=False)
        experiment.save()
        if config is not None:
            for method in experiment.methods:
                if method in config.spaces:
                    _create_trial(experiment, method, 0, sweeps.next_params(config, method, []))
                else:  # no search space (best-of-N): one run, as without a sweep
                    _create_run(experiment, method, 0)
            return experiment
        for seed in range(experiment.seeds):
            sft = None
            for method in sorted(experiment.methods, key=lambda m: m != "sft"):  # SFT first: others may wait for it
                waits = experiment.rl_from_sft and method != "sft" and sft is not None
                run = Run.objects.create(
                    experiment=experiment, method=method, seed=seed, config=experiment.run_config(method, seed),
                    depends_on=sft if waits else None, state=State.WAITING if waits else State.QUEUED,
                    log=f"waiting for {sft.label}" if waits else "queued")
                # A random suffix: a run never resumes from another run's checkpoints, even if ids restart
                # (a database reset while the artifacts stay).
                run.out_dir = str(settings.ARTIFACT_ROOT / "runs" / f"{run.pk}-{secrets.token_hex(4)}")
                run.save(update_fields=["out_dir"])
                if method == "sft":
                    sft = run
                if not waits:
                    enqueue(run, experiment.queue)
    return experiment


def _create_run(experiment: Experiment, method: str, seed: int, *, trial: int | None = None,
                params: dict | None = None) -> Run:
    config = {**experiment.run_config(method, seed), **(params or {})}
    run = Run.objects.create(experiment=experiment, method=method, seed=seed, trial=trial, config=config,
                             state=State.QUEUED, log="queued")
    run.out_dir = str(settings.ARTIFACT_ROOT / "runs" / f"{run.pk}-{secrets.token_hex(4)}")
    run.save(update_fields=["out_dir"])
    enqueue(run, experiment.queue)
    return run


def _create_trial(experiment: Experiment, method: str, number: int, params: dict) -> Run:
    """A sweep trial: the method's settings with the trial's parameters, the first seed (trials differ
    by their hyperparameters alone)."""
    return _create_run(experiment, method, 0, trial=number, params=params)


def recorded_trials(experiment: Experiment, method: str, config: sweeps.SweepConfig) -> list[sweeps.Trial]:
    """The method's trials as the sweep driver reads them: parameters from the runs' configs, validation
    scores (the validation half of the eval prompts) from their samples."""
    from webapp.experiments.models import Sample

    runs = list(experiment.runs.filter(method=method, trial__isnull=False).order_by("trial"))
    rows = Sample.objects.filter(run__in=runs).values_list("run_id", "step", "prompt_id", "reward")
    scored = sweeps.scores(rows)
    names = [p.name for p in config.spaces[method]]
    out = []
    for run in runs:
        score = scored.get(run.pk)
        if run.state == State.SUCCEEDED and score is not None and score.validation is not None:
            state, value = "complete", score.validation
        elif was_pruned(run):
            state, value = "pruned", None
        elif run.is_active:
            state, value = "running", None
        else:
            state, value = "failed", None
        out.append(sweeps.Trial(number=run.trial, params={k: run.config[k] for k in names if k in run.config},
                                state=state, value=value, intermediate=dict(score.intermediate) if score else {}))
    return out


PRUNED = "pruned at step"  # the log line of a trial its sweep stopped (the worker's sink writes it)


def was_pruned(run: Run) -> bool:
    """Whether a sweep trial was stopped by its sweep's pruner (it ends cancelled, its log saying so)."""
    return run.trial is not None and run.state == State.CANCELLED and PRUNED in run.log


def trial_should_prune(run: Run) -> bool:
    """Whether a running sweep trial should stop now: its validation reward at the evaluations so far is
    below the median of the method's finished trials at the same steps (Optuna's MedianPruner)."""
    if run.trial is None:
        return False
    config = sweeps.from_settings(run.experiment.sweep)
    if config is None or not config.prune or run.method not in config.spaces:
        return False
    trials = recorded_trials(run.experiment, run.method, config)
    current = next((t for t in trials if t.number == run.trial), None)
    return current is not None and sweeps.should_prune(config, run.method, trials, current)


def _advance_sweep(run: Run) -> None:
    """After a trial ends: the method's next trial, proposed from every trial so far, until its budget is spent."""
    if run.trial is None:
        return
    experiment = run.experiment
    config = sweeps.from_settings(experiment.sweep)
    if config is None or run.method not in config.spaces:
        return
    trials = recorded_trials(experiment, run.method, config)
    if any(t.state == "running" for t in trials if t.number != run.trial):
        return  # another trial of this method is still training: it will ask
    params = sweeps.next_params(config, run.method, trials)
    if params is not None:
        _create_trial(experiment, run.method, len(trials), params)


def do_finish_run(run: Run, state: str, *, error: str = "", traceback: str = "", note: str = "",
                  silent_since=None) -> bool:
    """running -> succeeded / failed / cancelled, if this attempt still holds the run (and, for the reaper,
    `silent_since` given, has still not beaten since then); then release or fail the runs waiting for it.
    Returns False when the run had already been taken away (or has beaten meanwhile)."""
    with transaction.atomic():
        run.refresh_from_db(fields=["log"])  # not `attempts`: the caller's value is its claim token
        line = note or (f"{state}: {error}" if error else state)
        done = held_by_attempt(run, silent_since).update(
            state=state, error=error[:10_000], traceback=traceback, finished_at=timezone.now(), eta_s=None,
            phase="done" if state == State.SUCCEEDED else state, log=run.with_log(line))
        if not done:
            return False
        _settle_dependents(run, state)
        run.state = state
        _advance_sweep(run)
        _store_series_on_commit([run.pk])
    return True


def _store_series_on_commit(run_ids: list[int]) -> None:
    """Once a run's end has committed, tell the apps above (`runs_ended`: the comparison stores the run's
    downsampled series). Receivers never raise; without the series the pages read the rows."""
    from webapp.experiments.signals import runs_ended

    transaction.on_commit(lambda: runs_ended.send(sender=Run, run_ids=run_ids))


def _settle_dependents(run: Run, state: str) -> None:
    waiting = run.dependents.filter(state=State.WAITING).select_related("experiment")
    if state == State.SUCCEEDED:
        model = str(run.model_dir)
        for dep in waiting:
            if run.method == "reward":  # it waited for its training signal (a later rating round's RL run)
                dep.config = {**dep.config, "reward_model": model}
            else:
                # Start from the SFT model, and measure KL against it: it is this run's starting point.
                dep.config = {**dep.config, "model": model, "reference_model": model}
            dep.state = State.QUEUED
            dep.log = dep.with_log(f"{run.label} succeeded: starting from its model")
            dep.save(update_fields=["config", "state", "log"])
            enqueue(dep, dep.experiment.queue)
        return
    reason = f"{run.label} (run #{run.pk}) {state}; this run starts from its model, so it cannot run"
    failed = [dep.pk for dep in waiting if Run.objects.filter(pk=dep.pk, state=State.WAITING).update(
        state=State.FAILED, error=reason, finished_at=timezone.now(), log=dep.with_log(reason))]
    if failed:
        _store_series_on_commit(failed)


def do_cancel_run(run: Run, by: str = "") -> None:
    """Waiting and queued runs are cancelled at once (a message still in the queue is then ignored by the
    claim). A running run is asked to stop: it stops cleanly at its next step, keeping what it logged;
    the worker's supervisor kills it after PTLAB_CANCEL_GRACE_SECONDS if it has not."""
    who = f" by {by}" if by else ""
    with transaction.atomic():
        run.refresh_from_db()
        if run.state in (State.WAITING, State.QUEUED):
            if Run.objects.filter(pk=run.pk, state=run.state).update(
                    state=State.CANCELLED, finished_at=timezone.now(), phase="cancelled",
                    log=run.with_log(f"cancelled{who}")):
                _settle_dependents(run, State.CANCELLED)
                _store_series_on_commit([run.pk])  # a requeued run has metrics of its earlier attempts
        elif run.state == State.RUNNING and not run.stop_requested:
            Run.objects.filter(pk=run.pk, state=State.RUNNING).update(
                stop_requested=True, stop_requested_at=Now())


class NotResumable(Exception):
    """Why a run cannot be resumed now (shown to the user as is)."""


def do_resume_run(run: Run, by: str = "") -> Run:
    """A failed or cancelled run goes back to the queue, ahead of runs queued after it first was. It resumes
    from its last checkpoint (keeping its metrics up to there) with the full attempt limit again; runs that
    failed because they start from its model wait for it again. A run whose starting run has not succeeded
    waits for it (or cannot resume while that one is failed or cancelled itself)."""
    who = f" by {by}" if by else ""
    with transaction.atomic():
        run = Run.objects.select_for_update(of=("self",)).select_related("experiment", "depends_on").get(pk=run.pk)
        if run.experiment.imported:
            raise NotResumable("Runs of an imported report are never trained.")
        if run.state not in (State.FAILED, State.CANCELLED):
            raise NotResumable(f"Only a failed or cancelled run can be resumed; this one is {run.state}.")
        parent = run.depends_on
        if parent is not None and parent.state in (State.FAILED, State.CANCELLED):
            raise NotResumable(f"It starts from {parent.label} (run #{parent.pk}), which is {parent.state}: "
                               "resume that one first.")
        waits = parent is not None and parent.state != State.SUCCEEDED
        line = f"resumed{who}: " + (f"waiting for {parent.label}" if waits else "queued (from its last checkpoint)")
        Run.objects.filter(pk=run.pk, state=run.state).update(
            state=State.WAITING if waits else State.QUEUED, attempts_before_resume=F("attempts"),
            stop_requested=False, stop_requested_at=None, error="", traceback="", finished_at=None,
            phase="queued", claimed_by="", eta_s=None, log=run.with_log(line))
        for dep in run.dependents.filter(state=State.FAILED, started_at__isnull=True):
            dep.state, dep.error, dep.finished_at = State.WAITING, "", None
            dep.log = dep.with_log(f"waiting for {run.label} again (resumed)")
            dep.save(update_fields=["state", "error", "finished_at", "log"])
        if not waits:
            enqueue(run, run.experiment.queue, ahead=True)
    run.refresh_from_db()
    return run


def do_cancel_experiment(experiment: Experiment, by: str = "") -> None:
    with transaction.atomic():
        # Waiting runs first, so they end `cancelled` rather than failed for their SFT run's cancellation.
        for state in (State.WAITING, State.QUEUED, State.RUNNING):
            for run in experiment.runs.filter(state=state):
                do_cancel_run(run, by)


def held_by_attempt(run: Run, silent_since=None):
    """The run, if the attempt `run` was read at still holds it; with `silent_since`, only if it has sent no
    heartbeat since then either (a reaper that read it as silent must not act on a run that beat meanwhile)."""
    held = Run.objects.filter(pk=run.pk, state=State.RUNNING, attempts=run.attempts)
    return held if silent_since is None else held.filter(heartbeat_at__lt=silent_since)


def requeue(run: Run, line: str, silent_since=None) -> bool:
    with transaction.atomic():
        if not held_by_attempt(run, silent_since).update(
                state=State.QUEUED, claimed_by="", phase="queued", eta_s=None, log=run.with_log(line)):
            return False
        enqueue(run, run.experiment.queue, ahead=True)
    return True


# --- organising: notes, tags, stars, archive, delete ----------------------------------------------------


def do_update_experiment(experiment: Experiment, *, name: str, notes: str, tags: list[str]) -> None:
    """Rename it, rewrite its notes and set its tags (created as needed)."""
    from webapp.experiments.models import Tag

    with transaction.atomic():
        experiment.name, experiment.notes = name, notes
        experiment.save(update_fields=["name", "notes"])
        objs = [Tag.objects.get_or_create(name=t)[0] for t in dict.fromkeys(tags)]
        experiment.tags.set(objs)


def do_set_star(experiment: Experiment, user, starred: bool) -> None:
    (experiment.starred_by.add if starred else experiment.starred_by.remove)(user)


def do_set_archived(experiment: Experiment, archived: bool) -> None:
    Experiment.objects.filter(pk=experiment.pk).update(archived=archived)
    experiment.archived = archived


class NotDeletable(Exception):
    """Why an experiment cannot be deleted now (shown to the user as is)."""


def do_delete_experiment(experiment: Experiment) -> None:
    """Delete it with everything it holds: runs, metrics, samples, votes (the database cascades) and, once
    that has committed, its runs' folders and its uploaded dataset. Refused while a run may still write:
    a worker must never write into a folder being removed."""
    import shutil

    with transaction.atomic():
        locked = Experiment.objects.select_for_update().filter(pk=experiment.pk).first()
        if locked is None:
            return
        if locked.runs.active().exists():
            raise NotDeletable("Its runs are still queued or running: cancel them first, then delete it.")
        folders = locked.artifact_dirs()
        dataset = locked.dataset_file_owned()
        storage = locked.dataset.storage
        locked.delete()

        def remove_files() -> None:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            if dataset:
                try:
                    storage.delete(dataset)
                except OSError:
                    log.warning("could not delete the dataset file %s", dataset, exc_info=True)

        transaction.on_commit(remove_files)


# --- trying a model -------------------------------------------------------------------------------------

TRY_TASK = "webapp.workers.tasks.answer_trial"
TRY_QUEUE = "try"  # its own queue: a long training run never holds a trial up


def send_trial(trial_id: int) -> None:
    """Publish the trial id on the `try` queue (the tests replace this to record what was sent)."""
    from webapp.celery import app

    app.send_task(TRY_TASK, args=(trial_id,), queue=TRY_QUEUE, retry_policy=PUBLISH_RETRY)


def do_create_trial(run: Run, user, *, prompt: str, version: dict, base: bool, others: list[Run],
                    temperature: float, top_p: float, max_new_tokens: int, seed: int):
    """A trial of `run`'s model (`version`: one of run.model_versions()) beside the base model (if `base`)
    and the final models of `others`; sent to the `try` workers once committed."""
    from webapp.experiments.models import Trial, TrialAnswer
    from webapp.experiments.references import model_path

    with transaction.atomic():
        trial = Trial.objects.create(owner=user, run=run, prompt=prompt, temperature=temperature, top_p=top_p,
                                     max_new_tokens=max_new_tokens, seed=seed)
        answers = [TrialAnswer(label=f"{run.label} (#{run.pk}) · {version['label']}", source_run=run,
                               checkpoint=version["step"], model_path=version["path"],
                               weights_path=version["weights"], tokenizer_path=version["tokenizer"])]
        if base:
            ref = model_path(run.experiment.base_model)
            answers.append(TrialAnswer(label=f"base model · {run.experiment.base_model}", model_path=ref,
                                       tokenizer_path=ref))
        for other in others:
            final = next(v for v in other.model_versions() if v["key"] == "final")
            answers.append(TrialAnswer(label=f"{other.experiment.name} · {other.label} (#{other.pk})",
                                       source_run=other, model_path=final["path"], tokenizer_path=final["tokenizer"]))
        for position, answer in enumerate(answers):
            answer.trial, answer.position = trial, position
        TrialAnswer.objects.bulk_create(answers)
        trial_id = trial.pk

        def send() -> None:
            try:
                send_trial(trial_id)
            except Exception:
                log.warning("trial #%s: the broker is unavailable", trial_id, exc_info=True)
                TrialAnswer.objects.filter(trial_id=trial_id, state=TrialAnswer.State.QUEUED).update(
                    state=TrialAnswer.State.FAILED, error="The workers could not be reached (broker down): try again.")

        transaction.on_commit(send)
    return trial
