"""CLI: `python -m training run CONFIG.json --out DIR`, `python -m training methods`, `python -m training tasks`,
`python -m training rewards`."""

from __future__ import annotations

import argparse
import os
import sys

from training.config import CONFIG_CLASSES, ConfigError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train one run from a JSON config")
    run_p.add_argument("config", help="path to a JSON config ({\"method\": ..., ...})")
    run_p.add_argument("--out", required=True, help="run folder: config.json, metrics.jsonl, samples.jsonl, model/")
    run_p.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    sub.add_parser("methods", help="list the methods and their options")
    sub.add_parser("tasks", help="list the built-in tasks")
    sub.add_parser("rewards", help="list the reward signals (built-in and plugins) and their parameters")
    args = parser.parse_args(argv)

    if args.command == "methods":
        from training.methods import DESCRIPTIONS

        for name, cls in CONFIG_CLASSES.items():
            print(f"{name:7s} {DESCRIPTIONS[name]}")
            for spec in cls.field_specs():
                print(f"    {spec['name']:18s} {spec['default']!r:>12}  {spec['help']}")
        return 0
    if args.command == "rewards":
        from training.rewards import describe

        for sig in describe():
            print(f"{sig['kind']:16s} {'(plugin) ' if sig['plugin'] else ''}{sig['description']}")
            for spec in sig["params"]:
                default = repr(spec["default"])
                default = default if len(default) <= 30 else default[:27] + "..."
                print(f"    {spec['name']:18s} {default:>12}  {spec['help']}")
        print('A config names a signal as "kind" or {"kind": ..., "name": ..., <parameter>: <value>, ...}.')
        return 0
    if args.command == "tasks":
        from training.tasks import BUILTIN_TASKS

        for task in BUILTIN_TASKS.values():
            train, held = task.split()
            print(f"{task.name:11s} {len(train):4d} train / {len(held):3d} eval prompts  {task.description}")
        print("or a path to a JSONL file of {prompt, completion}, {prompt, chosen, rejected} or {prompt, answer} rows;")
        print('or, as the config\'s "dataset", a JSONL/CSV/Parquet file, a save_to_disk folder or a hub id, with a '
              "column mapping")
        return 0

    try:
        cfg = load(args.config)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg.num_processes > 1:  # one process per GPU (or CPU processes), started by accelerate launch
        import subprocess

        from training.distributed import launch_command

        cmd = launch_command(cfg.num_processes, ["training.distributed", args.config, args.out],
                             config_file=os.environ.get("PTLAB_ACCELERATE_CONFIG", ""))
        return subprocess.call(cmd)
    from training.callbacks import FileSink
    from training.runner import run

    result = run(cfg, FileSink(args.out), args.out, resume=not args.no_resume)
    state = "stopped" if result.stopped else "finished"
    print(f"{state} at step {result.step} in {result.seconds:.1f}s; model saved to {result.model_dir}")
    for k, v in sorted(result.final_metrics.items()):
        print(f"  {k} = {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
