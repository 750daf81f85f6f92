"""Runs on several processes through a real worker: its run process starts `accelerate launch` (torchrun, 2 CPU
processes joined with gloo: the GPU path without GPUs), rank 0 writes, every rank stops together, and a rank
killed alone gets the run requeued and resumed from its checkpoint. Fixtures: tests/webapp/test_integration.py
(imported, hence the file-wide F811: pytest passes them in as arguments of the same names)."""
# ruff: noqa: F811

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.webapp.test_integration import (  # noqa: F401 (fixtures)
    SMALL,
    WAIT,
    artifact_root,
    assert_no_duplicate_points,
    broker,
    browser,
    enqueued,
    finished,
    queue,
    redis_url,
    steps_of,
    wait_for,
    worker,
    workers_of_their_own,
)
from webapp.experiments.models import Run, Sample

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
State = Run.State


def ranks_of(run: Run) -> dict[int, int]:
    """{rank: pid} of the processes training `run` (webapp/workers/rank.py)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"webapp.workers.rank" not in cmd or cmd[cmd.index(b"webapp.workers.rank") + 1] != str(run.pk).encode():
                continue
            env = dict(line.split(b"=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if b"=" in line)
            found[int(env[b"RANK"])] = int(pid)
        except (OSError, ValueError, IndexError, KeyError):
            continue
    return found


def past_a_checkpoint(run: Run):
    """A published checkpoint exists and the run trains past it (rotation keeps only the newest two, so
    not a fixed one: a fast run's checkpoint-4 is gone by step 12)."""
    from training.runner import checkpoint_step, last_checkpoint

    def check():
        found = last_checkpoint(Path(run.out_dir) / "checkpoints")
        row = Run.objects.get(pk=run.pk)
        return found is not None and row.state == State.RUNNING and row.step > checkpoint_step(found)

    return check


def resumed_and_past(run: Run, steps: int = 4):
    """The second attempt resumed from a checkpoint and trains `steps` past it. (These runs are long and are
    cancelled once this holds: a 60-step run once ended in 3 s, before any poll saw it past a checkpoint.)"""

    def check():
        row = Run.objects.get(pk=run.pk)
        found = re.search(r"resuming from the checkpoint at step (\d+)", row.log)
        return row.attempts == 2 and row.state == State.RUNNING and found and row.step >= int(found[1]) + steps

    return check


def cancel_and_check_the_points(run: Run, exp, *workers) -> Run:
    """Stop the run; every logged step from 1 to its last is there once, evaluations every 4 steps."""
    Run.objects.filter(pk=run.pk).update(stop_requested=True)
    (run,) = wait_for(lambda: finished(exp), WAIT, "the run to stop", *workers)
    assert run.state == State.CANCELLED, f"{run.error}\n{run.traceback}"
    assert_no_duplicate_points(run)
    steps = steps_of(run, "train/loss")
    assert steps == list(range(1, steps[-1] + 1))
    evals = steps_of(run, "eval/reward")
    assert evals == list(range(0, evals[-1] + 1, 4)) and evals[-1] >= steps[-1] - 4
    return run


@pytest.mark.parametrize("method", ["sft", "grpo", "dpo", "ppo"])
def test_a_run_on_two_processes_trains_and_logs_once(browser, worker, queue, method):
    extra = {"grpo-batch_size": "8", "grpo-num_generations": "4"} if method == "grpo" else {}
    exp = browser.create_experiment(name=f"2 processes {method}", methods=[method], rl_from_sft=None, queue=queue,
                                    **{**SMALL, f"{method}-num_processes": "2", f"{method}-batch_size": "4",
                                       **extra})
    (run,) = wait_for(lambda: finished(exp), WAIT, "the run to finish", worker)
    assert run.state == State.SUCCEEDED, f"{run.error}\n{run.traceback}"
    assert "training on 2 processes" in run.log
    assert steps_of(run, "train/loss/policy" if method == "ppo" else "train/loss") == [1, 2, 3, 4]
    assert steps_of(run, "eval/reward") == [0, 2, 4]
    assert Sample.objects.filter(run=run).count() == 3 * 2  # evaluations x prompts: rank 0's alone
    assert_no_duplicate_points(run)
    assert (Path(run.out_dir) / "model" / "config.json").is_file()
    assert not ranks_of(run)


def test_a_killed_run_process_takes_its_ranks_along_and_the_run_resumes(browser, worker, broker, tmp_path):
    """What a forced cancel or the OOM killer does to the run's process: the launcher dies with it, and every
    rank with the launcher; the run is requeued at once and resumes from its checkpoint."""
    from tests.webapp.test_integration import children

    with workers_of_their_own(broker, tmp_path, "ddp-oom") as (queue, [own]):
        exp = browser.create_experiment(name="kill the run process", methods=["sft"], rl_from_sft=None, queue=queue,
                                        **{**SMALL, "sft-max_steps": "100000", "eval_every": "4",
                                           "sft-num_processes": "2", "sft-batch_size": "4"})
        run = exp.runs.get()
        wait_for(past_a_checkpoint(run), WAIT, "a checkpoint and a step past it", own)
        ranks = ranks_of(run)
        [pool_child] = children(own.proc.pid)
        [run_process] = children(pool_child)
        os.kill(run_process, signal.SIGKILL)
        wait_for(lambda: not set(ranks.values()) & set(ranks_of(run).values()), 60, "the ranks to die", own)
        wait_for(resumed_and_past(run), WAIT, "the run to resume and train past its checkpoint", own)
        run = cancel_and_check_the_points(run, exp, own)
    assert run.attempts == 2 and "the run's process killed by SIGKILL" in run.log


def test_cancel_stops_every_rank(browser, worker, queue):
    exp = browser.create_experiment(name="cancel 2", methods=["sft"], rl_from_sft=None, queue=queue,
                                    **{**SMALL, "sft-max_steps": "100000", "eval_every": "100000",
                                       "sft-num_processes": "2", "sft-batch_size": "4"})
    run = exp.runs.get()
    wait_for(lambda: Run.objects.filter(pk=run.pk, step__gte=3).exists(), WAIT, "training to start", worker)
    Run.objects.filter(pk=run.pk).update(stop_requested=True)
    (run,) = wait_for(lambda: finished(exp), WAIT, "the run to stop", worker)
    assert run.state == State.CANCELLED and 3 <= run.step < 100000
    assert steps_of(run, "eval/reward") == [0]  # a cancel stops at the next step, without a final evaluation
    assert_no_duplicate_points(run)
    assert not ranks_of(run)


def test_a_killed_rank_requeues_the_run_and_it_resumes_from_its_checkpoint(browser, worker, broker, tmp_path):
    with workers_of_their_own(broker, tmp_path, "ddp") as (queue, [own]):
        exp = browser.create_experiment(name="kill a rank", methods=["sft"], rl_from_sft=None, queue=queue,
                                        **{**SMALL, "sft-max_steps": "100000", "eval_every": "4",
                                           "sft-num_processes": "2", "sft-batch_size": "4"})
        run = exp.runs.get()
        wait_for(past_a_checkpoint(run), WAIT, "a checkpoint and a step past it", own)
        ranks = ranks_of(run)
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        wait_for(lambda: not set(ranks.values()) & set(ranks_of(run).values()), 60, "the other rank to end", own)
        wait_for(resumed_and_past(run), WAIT, "the run to resume and train past its checkpoint", own)
        run = cancel_and_check_the_points(run, exp, own)
    assert run.attempts == 2
    assert "lost rank" in run.log and "resuming from the checkpoint at step" in run.log
