"""One rank of a run trained on several processes, as its worker starts it (webapp/workers/execution.py):

    accelerate launch ... -m webapp.workers.rank RUN_ID ATTEMPT REPORT_DIR

Every rank runs `training.runner.run` with the run's config; rank 0 writes through a DatabaseSink fenced by
the attempt that launched it (the others write nothing: training/distributed.py). Each rank leaves a report in
REPORT_DIR: rank 0 its result, and any rank the error it died of, so the worker can tell a broken run (fail it)
from a killed rank (requeue it: it resumes from its last checkpoint)."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from training import distributed

    distributed.die_with_parent()  # the launcher killed (a forced cancel, a dead worker): no rank trains on
    run_id, attempt, reports = (argv or sys.argv[1:])[:3]
    report = Path(reports) / f"rank{distributed.rank()}.json"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.db import connections

    from training.config import from_dict
    from training.runner import run as train
    from webapp.experiments.models import Run
    from webapp.workers.sink import DatabaseSink

    try:
        row = Run.objects.get(pk=int(run_id))
        sink = None
        if distributed.is_main():
            sink = DatabaseSink(row)
            sink.attempt = int(attempt)  # the launching attempt's claim: a later one makes every write a no-op
        result = train(from_dict(row.config), sink, row.out_dir)
        distributed.finish()  # every rank done: leave the process group before exiting
        if distributed.is_main():
            report.write_text(json.dumps({"step": result.step, "stopped": result.stopped, "seconds": result.seconds}))
        return 0
    except BaseException as exc:
        report.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000],
                                      "traceback": traceback.format_exc(), "collective": is_collective(exc)}))
        raise
    finally:
        connections.close_all()


def is_collective(exc: BaseException) -> bool:
    """An error a rank gets because another rank went away (the collective it waited in broke), not its own."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return any(s in text for s in ("gloo", "Gloo", "NCCL", "Connection closed by peer", "Connection reset",
                                   "Broken pipe", "ProcessGroup"))


if __name__ == "__main__":
    sys.exit(main())
