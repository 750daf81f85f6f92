"""Benchmark of blind rating (issue 5), through Django's test client (middleware, session, CSRF-exempt
client, template rendering included) on a fresh SQLite file database (or $DATABASE_URL with --use-env-db).

1. A vote's server time: POST /experiments/<pk>/rate/vote.json (token check, one upsert, the reveal and
   the progress counter), and the GET of the next item, on an experiment of 10 runs + the base model x
   16 prompts x 4 completions. Goal: a vote under 50 ms.
2. The leaderboard for 10,000 votes over 10 runs (no base model: 45 pairs) with 1,000 bootstrap rounds:
   the data step alone (fetch the votes, Bradley-Terry, bootstrap, Elo, matrices, agreement), with the
   figures, and the whole page. Goal: under 2 s.

    .venv/bin/python bench/ratings.py [--votes 200] [--repeat 5] [--use-env-db]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sft", "dpo", "ppo", "grpo", "rloo")


def setup(use_env_db: bool) -> None:
    if not use_env_db:
        folder = Path(tempfile.mkdtemp(prefix="ptlab-bench-ratings-"))
        os.environ["DATABASE_URL"] = f"sqlite:///{folder / 'bench.sqlite3'}"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("PTLAB_ALLOW_DEV_KEY", "1")  # a benchmark, not a deployment
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return f"median {1000 * statistics.median(xs):.1f} ms, p95 {1000 * p95:.1f} ms, max {1000 * xs[-1]:.1f} ms"


def bench_votes(n_votes: int) -> dict:
    from django.contrib.auth.models import User
    from django.test import Client

    from webapp.ratings.demo import make_demo_experiment
    from webapp.ratings.models import Invitation, Vote

    owner = User.objects.create_user("bench-owner")
    rater = User.objects.create_user("bench-rater")
    exp = make_demo_experiment(owner, name="bench: votes", methods=METHODS, seeds=2, prompts=16, steps=(0, 20, 40),
                               samples=4)
    Invitation.objects.create(experiment=exp, rater=rater)
    client = Client()
    client.force_login(rater)
    client.get(f"/experiments/{exp.pk}/rate/")  # warm-up: templates, URL resolver
    nexts, votes, next_cpu, vote_cpu = [], [], [], []
    rng = random.Random(0)
    for _ in range(n_votes):
        t0, c0 = time.perf_counter(), time.process_time()
        item = client.get(f"/experiments/{exp.pk}/rate/next.json").json()
        t1, c1 = time.perf_counter(), time.process_time()
        response = client.post(f"/experiments/{exp.pk}/rate/vote.json",
                               {"token": item["token"], "outcome": rng.choice(["a", "b", "tie", "both_bad"])})
        t2, c2 = time.perf_counter(), time.process_time()
        assert response.status_code == 200, response.content
        nexts.append(t1 - t0)
        votes.append(t2 - t1)
        next_cpu.append(c1 - c0)
        vote_cpu.append(c2 - c1)
    return {"rows": Vote.objects.filter(experiment=exp).count(), "next": nexts, "vote": votes,
            "next_cpu": next_cpu, "vote_cpu": vote_cpu, "contestants": exp.runs.count() + 1}


def bench_leaderboard(n_votes: int, repeat: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.test import Client

    from webapp.ratings.arena import Arena
    from webapp.ratings.demo import make_demo_experiment
    from webapp.ratings.leaderboard import build_leaderboard, leaderboard_context
    from webapp.ratings.models import RatingSetup, Vote

    owner = User.objects.create_user("bench-board-owner")
    exp = make_demo_experiment(owner, name="bench: leaderboard", methods=METHODS, seeds=2, prompts=16,
                               steps=(0, 20), samples=1)
    RatingSetup.objects.create(experiment=exp, include_base=False)
    arena = Arena(exp)
    assert len(arena.contestants) == 10, arena.contestants
    items = [(p, a, b) for a, b in arena.pairs for p in arena.prompt_ids]  # 45 pairs x 16 prompts = 720
    raters = [User.objects.create_user(f"bench-rater-{k}") for k in range(-(-n_votes // len(items)))]
    strength = {k: 0.3 * n for n, k in enumerate(arena.contestants)}
    rng = random.Random(0)
    rows = []
    for n in range(n_votes):
        rater = raters[n // len(items)]
        prompt_id, a, b = items[n % len(items)]
        p_a = 1 / (1 + 2.718281828 ** (strength[b] - strength[a]))
        left_is_first = rng.random() < 0.5
        u = rng.random()
        outcome = "tie" if u < 0.08 else "both_bad" if u < 0.12 else (
            "a" if (rng.random() < p_a) == left_is_first else "b")
        rows.append(Vote(experiment=exp, rater=rater, step=arena.step, prompt_id=prompt_id, first=a, second=b,
                         left_is_first=left_is_first, outcome=outcome))
    with transaction.atomic():
        Vote.objects.bulk_create(rows, batch_size=2000)
    assert Vote.objects.filter(experiment=exp).count() == n_votes

    client = Client()
    client.force_login(owner)
    client.get(f"/experiments/{exp.pk}/leaderboard/")  # warm-up (imports plotly, compiles templates)
    data, context, page, page_cpu = [], [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        board = build_leaderboard(exp, rounds=1000)
        t1 = time.perf_counter()
        leaderboard_context(exp, rounds=1000)
        t2, c2 = time.perf_counter(), time.process_time()
        response = client.get(f"/experiments/{exp.pk}/leaderboard/")
        t3, c3 = time.perf_counter(), time.process_time()
        assert response.status_code == 200 and board.n_votes == n_votes
        data.append(t1 - t0)
        context.append(t2 - t1)
        page.append(t3 - t2)
        page_cpu.append(c3 - c2)
    from webapp.ratings import bt

    i = [rng.randrange(10) for _ in range(n_votes)]
    j = [(x + rng.randrange(1, 10)) % 10 for x in i]
    s = [rng.choice([0.0, 0.5, 1.0]) for _ in range(n_votes)]
    pure = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        bt.bradley_terry(10, i, j, s, rounds=1000)
        pure.append(time.perf_counter() - t0)
    return {"data": data, "context": context, "page": page, "page_cpu": page_cpu, "pure": pure, "bytes": len(response.content),
            "order": [r.label for r in board.rows[:3]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votes", type=int, default=200, help="votes cast through HTTP for the vote timing")
    parser.add_argument("--board-votes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--use-env-db", action="store_true", help="use $DATABASE_URL instead of a fresh SQLite file")
    args = parser.parse_args()
    setup(args.use_env_db)
    from django.db import connection

    print(f"database: {connection.vendor}; load: {os.getloadavg()}")
    v = bench_votes(args.votes)
    print(f"vote (POST vote.json), {args.votes} votes, {v['contestants']} contestants x 16 prompts:")
    print(f"  wall: {ms(v['vote'])}")
    print(f"  CPU of this process (what the shared machine's load does not inflate): {ms(v['vote_cpu'])}")
    print(f"next item (GET next.json): wall {ms(v['next'])}; CPU {ms(v['next_cpu'])}")
    b = bench_leaderboard(args.board_votes, args.repeat)
    print(f"leaderboard, {args.board_votes} votes x 10 runs, 1,000 bootstrap rounds ({args.repeat} times):")
    print(f"  data step (build_leaderboard):        {ms(b['data'])}")
    print(f"  with figures (leaderboard_context):   {ms(b['context'])}")
    print(f"  whole page (GET leaderboard/):        {ms(b['page'])}, {b['bytes'] / 1024:.0f} KiB")
    print(f"  whole page, CPU (numpy may use 2 threads): {ms(b['page_cpu'])}")
    print(f"  Bradley-Terry + bootstrap alone (bt): {ms(b['pure'])}")
    print(f"  top 3: {b['order']}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
