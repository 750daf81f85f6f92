"""How long can a run's heartbeat thread wait for the GIL? (issue 3: a live run was reaped in a test)

    OMP_NUM_THREADS=1 .venv/bin/python bench/heartbeat_stall.py [--methods dpo,grpo,sft] [--repeats 2]

Like the worker: this process imports the training stack, then forks a process per run (plain, or after
gc.freeze() as webapp/workers/worker.py does). In the child a thread sleeps 20 ms in a loop, a stand-in
for the heartbeat thread, while the main thread trains a tiny run (4 steps, 2 evaluations). Reported: the
thread's longest lateness and the garbage collector's pauses (gc.callbacks), which hold the GIL.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def child(method: str, frozen: bool) -> dict:
    import training.runner
    from training.callbacks import FileSink
    from training.config import from_dict

    late = []

    def tick():
        while True:
            t = time.perf_counter()
            time.sleep(0.02)
            late.append(time.perf_counter() - t - 0.02)

    threading.Thread(target=tick, daemon=True).start()
    pauses, started = [], {}

    def on_gc(phase, info):
        if phase == "start":
            started["t"] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started["t"]))

    gc.callbacks.append(on_gc)
    out = tempfile.mkdtemp(prefix="hbstall-")
    cfg = from_dict({"method": method, "model": "tiny", "task": "arithmetic", "max_steps": 4, "eval_every": 2,
                     "eval_prompts": 2, "eval_samples": 1, "max_new_tokens": 4, "seed": 0})
    devnull = os.open(os.devnull, os.O_WRONLY)  # the sink's progress lines and the trainers' warnings
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    t = time.perf_counter()
    training.runner.run(cfg, FileSink(out), out)
    return {"method": method, "frozen": frozen, "run_s": round(time.perf_counter() - t, 2),
            "thread_max_late_s": round(max(late), 3),
            "gc_max_pause_s": round(max(p for _, p in pauses), 3),
            "full_collections_s": [round(p, 3) for g, p in pauses if g == 2], "collections": len(pauses)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="dpo,grpo,sft")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import training.runner  # noqa: F401  (what the worker preloads before forking runs)

    print(f"tracked objects after the import: {len(gc.get_objects())}; load {os.getloadavg()}")
    for frozen in (False, True):
        if frozen:
            gc.collect()
            gc.freeze()
        for method in args.methods.split(","):
            for _ in range(args.repeats):
                r, w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    os.write(w, json.dumps(child(method, frozen)).encode())
                    os._exit(0)
                os.close(w)
                with os.fdopen(r) as f:
                    print(f.read())
                os.waitpid(pid, 0)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
