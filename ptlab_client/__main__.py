"""python -m ptlab_client --url URL --token TOKEN COMMAND ...

  launch FILE.json [--follow]   create an experiment from a JSON spec (the new-experiment form's fields)
  status ID                     an experiment's runs: state, progress, latest reward and KL
  follow ID                     wait for an experiment to finish, with a progress bar
  cancel ID                     cancel an experiment's active runs
  resume RUN_ID                 resume a failed or cancelled run from its last checkpoint
  metrics RUN_ID [--names a,b]  a run's metric points as CSV (name,step,value)
  report ID --out FILE.json     download the experiment's JSON report

URL and TOKEN default to $PTLAB_URL and $PTLAB_TOKEN. Exit status: 0 ok, 1 API error, 2 usage,
3 when a followed experiment ends with failed or cancelled runs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ptlab_client.client import ApiError, Client

ACTIVE = ("waiting", "queued", "running")
BAR = 30


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def status_lines(exp: dict) -> list[str]:
    lines = [f"experiment {exp['id']} {exp['name']!r}: {exp['state']}"]
    for r in exp.get("runs", []):
        place = f" (#{r['queue_position']} in line)" if r.get("queue_position") else ""
        lines.append(f"  run {r['id']:>5} {r['label']:<14} {r['state']:<10} step {r['step']}/{r['total']} "
                     f"reward {_fmt(r['latest']['reward'])} kl {_fmt(r['latest']['kl'])}{place}"
                     + (f"  error: {r['error'].splitlines()[0]}" if r.get("error") else ""))
    return lines


def progress_bar(exp: dict) -> str:
    runs = exp.get("runs", [])
    done = sum(1 for r in runs if r["state"] not in ACTIVE)
    steps = sum(r["total"] if r["state"] not in ACTIVE else min(r["step"], r["total"]) for r in runs)
    total = sum(r["total"] for r in runs) or 1
    frac = min(1.0 if done == len(runs) else 0.999, steps / total)  # 100 % only once every run has ended
    filled = round(BAR * frac)
    places = sorted(r["queue_position"] for r in runs if r.get("queue_position"))
    queued = f"  queued: {', '.join(f'#{p}' for p in places)} in line" if places else ""
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {100 * frac:5.1f}%  runs {done}/{len(runs)} done{queued}"


# Answers that mean "the server is not there right now" (restarting, behind a proxy that says so).
TRANSIENT = {0, 502, 503, 504}


def follow(client: Client, pk: int, interval: float = 2.0, out=None, give_up_after: float = 600.0,
           sleep=time.sleep, clock=time.monotonic) -> dict:
    """Poll until no run is active, drawing a progress bar (one line, redrawn; one line per poll when
    `out` is not a terminal). A server that goes away (a restart) is waited for, up to `give_up_after`
    seconds without an answer, polling more slowly meanwhile; other API errors end it."""
    out = out or sys.stderr
    tty = out.isatty()
    down_since = None
    while True:
        try:
            exp = client.experiment(pk)
        except ApiError as e:
            if e.status not in TRANSIENT:
                raise
            now = clock()
            down_since = down_since if down_since is not None else now
            if now - down_since > give_up_after:
                raise
            line = f"server unreachable ({e.message or e.code}); retrying for {give_up_after - (now - down_since):.0f} s"
            out.write(("\r" + line.ljust(78)) if tty else line + "\n")
            out.flush()
            sleep(min(interval * 4, max(interval, now - down_since)))
            continue
        if down_since is not None:
            down_since = None
            out.write(("\r" if tty else "") + "server back" + (" " * 68 if tty else "") + "\n")
        line = progress_bar(exp)
        out.write(("\r" + line) if tty else line + "\n")
        out.flush()
        if not any(r["state"] in ACTIVE for r in exp["runs"]):
            if tty:
                out.write("\n")
            return exp
        sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ptlab_client", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("PTLAB_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("PTLAB_TOKEN"))
    parser.add_argument("--interval", type=float, default=2.0, help="Seconds between polls when following.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("launch", help="Create an experiment from a JSON file.")
    p.add_argument("file", type=Path)
    p.add_argument("--follow", action="store_true", help="Wait for it, with a progress bar.")
    sub.add_parser("status", help="An experiment's runs.").add_argument("id", type=int)
    sub.add_parser("follow", help="Wait for an experiment to finish.").add_argument("id", type=int)
    sub.add_parser("cancel", help="Cancel an experiment.").add_argument("id", type=int)
    sub.add_parser("resume", help="Resume a failed or cancelled run from its last checkpoint.").add_argument(
        "run_id", type=int)
    p = sub.add_parser("metrics", help="A run's metrics as CSV.")
    p.add_argument("run_id", type=int)
    p.add_argument("--names", help="Comma-separated metric names (eval/* for a prefix).")
    p.add_argument("--step-min", type=int)
    p.add_argument("--step-max", type=int)
    p = sub.add_parser("report", help="Download an experiment's JSON report.")
    p.add_argument("id", type=int)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token (or $PTLAB_TOKEN) is required: create one on the web app's API tokens page")
    client = Client(args.url, args.token)
    try:
        return _run(client, args)
    except ApiError as e:
        print(e.describe(), file=sys.stderr)
        return 1


def _run(client: Client, args) -> int:
    if args.command == "launch":
        try:
            spec = json.loads(args.file.read_text())
        except (OSError, ValueError) as e:
            print(f"cannot read {args.file}: {e}", file=sys.stderr)
            return 2
        exp = client.create_experiment(spec)
        print(f"created experiment {exp['id']} with {len(exp['runs'])} runs: {client.url}{exp['url']}")
        return _follow(client, exp["id"], args.interval) if args.follow else 0
    if args.command == "status":
        print("\n".join(status_lines(client.experiment(args.id))))
        return 0
    if args.command == "follow":
        return _follow(client, args.id, args.interval)
    if args.command == "cancel":
        print("\n".join(status_lines(client.cancel_experiment(args.id))))
        return 0
    if args.command == "resume":
        r = client.resume_run(args.run_id)
        print(f"run {r['id']} ({r['method']} seed {r['seed']}): {r['state']}")
        return 0
    if args.command == "metrics":
        names = args.names.split(",") if args.names else None
        print("name,step,value")
        for p in client.metrics(args.run_id, names, args.step_min, args.step_max):
            print(f"{p['name']},{p['step']},{'' if p['value'] is None else repr(p['value'])}")
        return 0
    if args.command == "report":
        data = client.report(args.id)
        args.out.write_bytes(data)
        print(f"wrote {args.out} ({len(data)} bytes)")
        return 0
    return 2


def _follow(client: Client, pk: int, interval: float) -> int:
    exp = follow(client, pk, interval)
    print("\n".join(status_lines(exp)))
    return 0 if all(r["state"] == "succeeded" for r in exp["runs"]) else 3


if __name__ == "__main__":
    sys.exit(main())
