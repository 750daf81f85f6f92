"""Benchmark of the statistics the comparison page adds (issue 17): the verdicts (paired bootstrap,
2,000 rounds, Holm), the over-optimisation flags and the reward at equal KL, for an experiment of
8 runs (DPO, PPO, GRPO, RLOO x 2 seeds; 200 steps, an evaluation every 20 steps of 20 prompts x 8
samples: the prefilled example's evaluation settings), in a fresh SQLite file database.

Times, series cached in the process as on a warm page: the verdicts with their two queries
(`loader.verdicts_table`), the verdicts' statistics alone on rows in memory (`core.verdicts.from_samples`),
the flags and the equal-KL table; and the whole page with and without them (the GET, test client).

    .venv/bin/python bench/verdicts.py [--repeat 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(db: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def timed(fn, repeat: int) -> tuple[float, float, float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out), min(out), max(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    setup(Path(tmp.name) / "bench.sqlite3")
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    from webapp.compare import demo, loader, views
    from webapp.compare.core import equal_kl, overopt, verdicts
    from webapp.experiments import actions
    from webapp.experiments.models import Experiment, Run, Sample

    actions.send_to_workers = lambda *a, **kw: None
    owner = User.objects.create_user("bench", password="pw-bench-123")
    exp = Experiment.objects.create(owner=owner, name="Verdicts benchmark", base_model="tiny", task="arithmetic",
                                    methods=["dpo", "ppo", "grpo", "rloo"], seeds=2, max_steps=200, eval_every=20,
                                    eval_prompts=20, eval_samples=8, max_new_tokens=8)
    for seed in range(2):
        for method in exp.methods:
            run = Run.objects.create(experiment=exp, method=method, seed=seed, config=exp.run_config(method, seed))
            demo.fill_run(run, steps=200, eval_every=20, prompts=20, per_prompt=8, proxy=method == "ppo")
    runs = loader.experiment_runs(exp)
    assert len(runs) == 8 and Sample.objects.count() == 8 * 11 * 160
    data = loader.run_data(runs)  # the series cached, as on a warm page
    names = loader.labels(runs)
    rows = list(Sample.objects.filter(run__experiment=exp, step=200).values_list("run_id", "step", "prompt_id", "reward"))
    members = [(r.pk, *names[r.pk]) for r in runs]

    results = {
        "verdicts, with their 2 queries (loader.verdicts_table)": timed(lambda: loader.verdicts_table(runs), args.repeat),
        "verdicts' statistics alone, rows in memory (core.verdicts.from_samples)":
            timed(lambda: verdicts.from_samples(members, rows), args.repeat),
        "over-optimisation flags (core.overopt.all_flags)": timed(lambda: overopt.all_flags(data), args.repeat),
        "reward at equal KL (core.equal_kl)": timed(lambda: equal_kl.reward_at_equal_kl(data), args.repeat),
        "all the page's statistics (loader.statistics, summary included)": timed(lambda: loader.statistics(runs), args.repeat),
        "the summary table alone (what the page computed before)": timed(lambda: loader.summary(runs), args.repeat),
    }
    client = Client()
    client.force_login(owner)
    url = reverse("compare:experiment", args=[exp.pk])
    results["the page, warm (GET)"] = timed(lambda: client.get(url), args.repeat)
    original = loader.statistics
    loader.statistics = lambda rs: {"summary": loader.summary(rs), "verdicts": {"rows": []}, "flags": [],
                                    "equal_kl": {"rows": []}}
    views.loader = loader
    results["the page, warm, without the issue-17 statistics"] = timed(lambda: client.get(url), args.repeat)
    loader.statistics = original
    table = loader.verdicts_table(runs)
    print(f"{len(runs)} runs, {len(rows)} samples at the final evaluation, {len(table['rows'])} pairs")
    print("| what | median ms (min-max) |\n|---|---|")
    for what, (med, lo, hi) in results.items():
        print(f"| {what} | {med:.1f} ({lo:.1f}-{hi:.1f}) |")
    print()
    for row in table["rows"]:
        print(f"| {row['sentence']} | {row['difference']} | {row['p_holm']} | {row['detectable']} |")
    print(os.getloadavg())


if __name__ == "__main__":
    main()
