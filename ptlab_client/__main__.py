"""python -m ptlab_client --url URL --token TOKEN COMMAND ...

  launch FILE.json [--follow] [--sweep-trials N] [--sweep-sampler tpe|random]
                                create an experiment from a JSON spec (the new-experiment form's fields),
                                with an equal-budget sweep of N trials per method (also: create)
  sweep ID                      an experiment's sweep: per method its trials, the best one, the verdicts
  status ID                     an experiment's runs: state, progress, latest reward and KL
  follow ID                     wait for an experiment to finish, with a progress bar
  cancel ID                     cancel an experiment's active runs
  resume RUN_ID                 resume a failed or cancelled run from its last checkpoint
  metrics RUN_ID [--names a,b]  a run's metric points as CSV (name,step,value)
  report ID --out FILE.json     download the experiment's JSON report
  judge ID [--model M] [--more N] [--follow]
                                a local judge votes on the items people voted on (or N more pairs)

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


def sweep_lines(sweep: dict) -> list[str]:
    """The sweep as tables, one per method: its trials with their searched settings, then its best trial;
    the winners' verdicts on the test half last."""
    s = sweep["settings"]
    lines = [f"sweep of experiment {sweep['experiment']}: {s['trials']} trials per method ({s['sampler']}); "
             f"chosen on {sweep['validation_prompts']} validation prompts, reported on {sweep['test_prompts']} "
             "test prompts"]
    for m in sweep["methods"]:
        lines += ["", f"{m['label']}: {len(m['trials'])}/{m['budget']} trials, {m['completed']} completed, "
                      f"{m['pruned']} pruned"]
        lines.append("  " + f"{'trial':>5} {'run':>6} {'state':<9} {'validation':>10}"
                     + "".join(f" {name:>14}" for name in m["searched"]))
        for t in m["trials"]:
            lines.append("  " + f"{t['number']:>5} {t['run']:>6} {t['state']:<9} {_fmt(t['validation']):>10}"
                         + "".join(f" {_fmt(t['params'].get(name), '.3g'):>14}" for name in m["searched"]))
        best = m["best"]
        lines.append(f"  best: {best['label']} (run {best['run']}), validation {_fmt(best['validation'])}, "
                     f"test {_fmt(best['test'])}" if best else "  best: - (no trial completed yet)")
    rows = sweep["verdicts"]["rows"]
    if rows:
        lines += ["", "verdicts (test half):"] + [f"  {r['sentence']}" for r in rows]
    return lines


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
    p = sub.add_parser("launch", aliases=["create"], help="Create an experiment from a JSON file.")
    p.add_argument("file", type=Path)
    p.add_argument("--follow", action="store_true", help="Wait for it, with a progress bar.")
    p.add_argument("--sweep-trials", type=int, help="An equal-budget sweep: this many trials per method.")
    p.add_argument("--sweep-sampler", choices=("tpe", "random"), help="The sweep's sampler (default: tpe).")
    sub.add_parser("sweep", help="An experiment's sweep, a table per method.").add_argument("id", type=int)
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
    p = sub.add_parser("vote-dataset", help="Build a preference dataset from an experiment's votes.")
    p.add_argument("id", type=int)
    p.add_argument("--ties", choices=("drop", "both"), default="drop")
    p.add_argument("--both-bad", choices=("drop", "tie"), default="drop")
    p.add_argument("--disagree", choices=("keep", "drop", "majority", "weight"), default="keep")
    p.add_argument("--also", type=int, nargs="*", default=[], help="Other experiments of yours whose votes join.")
    p = sub.add_parser("next-round", help="Start the next rating round (default: from the leader, PPO and DPO).")
    p.add_argument("id", type=int)
    p.add_argument("--pick", action="append", help="A contestant key to start from (repeatable).")
    p.add_argument("--methods", default="ppo,dpo", help="Comma-separated: ppo, grpo, rloo, dpo.")
    p.add_argument("--vote-dataset", type=int, help="A vote dataset id (default: build a new version).")
    sub.add_parser("rounds", help="An experiment's rounds.").add_argument("id", type=int)
    p = sub.add_parser("judge", help="Let a local judge vote on an experiment (calibrate, or label more pairs).")
    p.add_argument("id", type=int)
    p.add_argument("--model", default="tiny", help="tiny, demo or run:<id> (a finished run of yours).")
    p.add_argument("--more", type=int, help="Label this many unrated pairs (only once calibrated).")
    p.add_argument("--follow", action="store_true", help="Wait for the job and print the calibration.")
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
    if args.command in ("launch", "create"):
        try:
            spec = json.loads(args.file.read_text())
        except (OSError, ValueError) as e:
            print(f"cannot read {args.file}: {e}", file=sys.stderr)
            return 2
        if args.sweep_trials is not None or args.sweep_sampler:
            if not isinstance(spec, dict):
                print(f"{args.file} is not a JSON object", file=sys.stderr)
                return 2
            sweep = dict(spec["sweep"]) if isinstance(spec.get("sweep"), dict) else {}
            if args.sweep_trials is not None:
                sweep["trials"] = args.sweep_trials
            if args.sweep_sampler:
                sweep["sampler"] = args.sweep_sampler
            spec["sweep"] = sweep
        exp = client.create_experiment(spec)
        print(f"created experiment {exp['id']} with {len(exp['runs'])} runs: {client.url}{exp['url']}")
        return _follow(client, exp["id"], args.interval) if args.follow else 0
    if args.command == "status":
        print("\n".join(status_lines(client.experiment(args.id))))
        return 0
    if args.command == "sweep":
        print("\n".join(sweep_lines(client.sweep(args.id))))
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
    if args.command == "vote-dataset":
        v = client.build_vote_dataset(args.id, ties=args.ties, both_bad=args.both_bad, disagree=args.disagree,
                                      also=args.also)
        print(f"vote dataset {v['id']} v{v['version']} (dataset {v['dataset']}): {v['rows']} pairs from "
              f"{v['votes']} of {v['votes_read']} votes; files {client.url}{v['files']['jsonl']}")
        return 0
    if args.command == "next-round":
        r = client.start_round(args.id, picks=args.pick, methods=args.methods.split(","),
                               vote_dataset=args.vote_dataset)
        print(f"round {r['round']} from {', '.join(r['started_from'])}: "
              + ", ".join(f"{x['method']} #{x['id']} ({x['state']})" for x in r["runs"]))
        return 0
    if args.command == "rounds":
        for rnd in client.rounds(args.id):
            extra = [f"cost {rnd['votes_cost']} votes" if rnd["votes_cost"] is not None else "",
                     f"reward model accuracy {_fmt(rnd['reward_model_accuracy'])}"
                     if rnd["reward_model_accuracy"] is not None else ""]
            print(f"round {rnd['number']}" + "".join(f"; {e}" for e in extra if e))
            for row in rnd["runs"]:
                print(f"  {row['label']:<40} {row['state']:<10} gold {_fmt(row['gold_reward'])}  KL {_fmt(row['kl'])}"
                      f"  BT {_fmt(row['bt_score'], '.0f')}  votes {row['votes']}")
        return 0
    if args.command == "judge":
        job = client.start_judge(args.id, args.model, "more" if args.more else "calibrate", args.more)
        print(f"judge job {job['id']}: {job['judge']} {job['mode']}, {job['state']}")
        if not args.follow:
            return 0
        while not job["finished"]:
            time.sleep(args.interval)
            job = client.judge_job(job["id"])
        print(f"{job['state']}: {job['message']}")
        for c in job.get("calibration", []):
            print(f"  {c['judge']}: {c['items']} items, agreement {_fmt(c['percent'])}, kappa {_fmt(c['kappa'])} "
                  f"[{_fmt(c['kappa_low'])}, {_fmt(c['kappa_high'])}], may label more: {c['allowed']}")
        return 0 if job["state"] == "done" else 1
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
