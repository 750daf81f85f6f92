"""One run on several processes (`num_processes` > 1): launched with `accelerate launch` (torchrun underneath:
DDP by default; FSDP or DeepSpeed through an accelerate config file the administrator provides), each process
runs `training.runner.run` with the same config. The engines are accelerate's and TRL's own; what is ptlab's is
here: which process writes, and the decisions every process must take together.

- Rank 0 alone writes: metrics, samples, progress, the config, checkpoints and the final model are published
  by it (the other ranks' sinks drop what they are given), so nothing is logged twice.
- A stop (a cancel, the run taken away from this attempt) is decided by rank 0's sink and broadcast at each
  step end, so every rank leaves the training loop at the same step (one rank leaving alone would leave the
  others waiting in a collective).
- Folders: rank 0 creates and clears them; the others wait at a barrier.

`launch_command` builds the command a worker (or a user, for the CLI) runs; `python -m training.distributed`
is each rank's entry point for the CLI (the web app's is webapp/workers/rank.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return world_size() > 1


def init(device_type: str) -> None:
    """Join the process group (gloo on the CPU, NCCL on GPUs) through accelerate's PartialState, which the
    trainers then share. A no-op in a single process."""
    if not active():
        return
    from accelerate import PartialState

    PartialState(cpu=device_type == "cpu")


def barrier() -> None:
    import torch.distributed as dist

    if active() and dist.is_initialized():
        dist.barrier()


def broadcast(value):
    """Rank 0's `value` on every rank."""
    import torch.distributed as dist

    if not (active() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish() -> None:
    """Leave the process group once every rank is done: a rank exiting with the group's threads still alive
    aborts ("terminate called without an active exception"), and torchrun then reports the run as failed."""
    import torch.distributed as dist

    if active() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def mean(stats: dict[str, float]) -> dict[str, float]:
    """The mean over processes of each value (the same keys on every process); the values themselves alone."""
    import torch
    import torch.distributed as dist

    if not (active() and dist.is_initialized()) or not stats:
        return stats
    keys = sorted(stats)
    device = torch.device("cuda", local_rank()) if dist.get_backend() == "nccl" else torch.device("cpu")
    values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(keys, (values / world_size()).tolist(), strict=True))


def die_with_parent() -> None:
    """SIGKILL this process when its parent (the launcher) dies: a killed launcher leaves no rank behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class RankSink:
    """The sink of one rank: rank 0's real sink, or nothing on the others; stop and loss decided together."""

    def __init__(self, inner):
        self.inner = inner if is_main() else None
        self.lost = False
        self._stop = False
        self.attempt = broadcast(getattr(inner, "attempt", "local"))  # names the attempt's folder on every rank

    def log_metrics(self, step, metrics):
        if self.inner is not None:
            self.inner.log_metrics(step, metrics)

    def log_samples(self, step, samples):
        if self.inner is not None:
            self.inner.log_samples(step, samples)

    def progress(self, p):
        if self.inner is not None:
            self.inner.progress(p)

    def truncate_after(self, step):
        if self.inner is not None:
            self.inner.truncate_after(step)

    def should_stop(self) -> bool:
        """Called by every rank once per step end (RunHooks.on_step_end): rank 0 asks, all learn the answer."""
        mine = (False, False)
        if self.inner is not None:
            stop = self.inner.should_stop()
            mine = (bool(stop), bool(getattr(self.inner, "lost", False)))
        self._stop, self.lost = broadcast(mine)
        return self._stop or self.lost

    def publish(self, source, target) -> bool:
        """Every rank calls it (a checkpoint's save, the final model): all have written their part, then rank 0
        moves the folder into place, and all learn whether it did."""
        barrier()
        done = False
        if self.inner is not None:
            from training.folders import replace_folder

            done = bool(getattr(self.inner, "publish", replace_folder)(Path(source), Path(target)))
        done = broadcast(done)
        if not done:
            self.lost = self.lost or bool(broadcast(getattr(self.inner, "lost", False)))
        return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(num_processes: int, module_args: list[str], *, config_file: str = "",
                   python: str = sys.executable) -> list[str]:
    """`accelerate launch` for `python -m <module_args>` on `num_processes` processes of this machine: torchrun
    (DDP) unless the administrator's accelerate config (FSDP, DeepSpeed ZeRO) says otherwise. On a machine
    without GPUs the same launcher starts CPU processes (the ranks join with gloo: see `init`)."""
    cmd = [python, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes), "--num_machines", "1",
           "--main_process_port", str(free_port())]
    if config_file:
        cmd += ["--config_file", config_file]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd + ["-m", *module_args]


def main(argv: list[str] | None = None) -> int:
    """A rank of the CLI's run: `python -m training.distributed CONFIG.json OUT` under accelerate launch."""
    die_with_parent()
    argv = sys.argv[1:] if argv is None else argv
    from training.callbacks import FileSink
    from training.config import load
    from training.runner import run

    cfg = load(argv[0])
    result = run(cfg, FileSink(argv[1]) if is_main() else None, argv[1])
    finish()  # only when done: after an error the others may never reach the barrier (torchrun stops them)
    if is_main():
        print(f"{'stopped' if result.stopped else 'finished'} at step {result.step} in {result.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
