"""The leaderboard of an experiment's votes (every contestant that has votes, in this setup or an earlier one): a data step (plain numbers, `build_leaderboard`)
and the context its templates take (`leaderboard_context`), which the comparison page and reports reuse:

    from webapp.ratings.leaderboard import leaderboard_context
    context.update(leaderboard_context(experiment))            # then {% include "ratings/_leaderboard.html" %}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model

from webapp.experiments.models import Experiment
from webapp.ratings import bt
from webapp.ratings.arena import Arena
from webapp.ratings.models import BASE, Vote

BOTH_BAD_CHOICES = {"tie": "count as a tie", "drop": "leave out"}
ROUNDS = 1000


@dataclass
class Row:
    key: str
    label: str
    method: str
    votes: int
    rank: int | None = None  # 1 + contestants whose interval lies wholly above this one's
    score: float | None = None  # Bradley-Terry on the Elo scale
    low: float | None = None
    high: float | None = None
    theta: float | None = None
    elo: float | None = None
    win_rate: float | None = None
    reward: float | None = None
    reward_rank: int | None = None
    perfect: bool = False
    bar: dict = field(default_factory=dict)  # the interval as percentages of the table's scale, for CSS


@dataclass
class Leaderboard:
    experiment: Experiment
    step: int | None  # 0: contestants' keys carry their steps
    steps: list[int]  # unused since contestants carry their steps; kept for the templates' callers
    both_bad: str
    rounds: int
    n_votes: int
    n_dropped: int  # "both are bad" votes left out
    rows: list[Row]
    labels: list[str]  # matrix order (the rows' order)
    win_rate: list[list[float | None]]
    pair_votes: list[list[int]]
    raters: list[dict]
    agreement: bt.Agreement | None
    position: bt.PositionBias
    rank: bt.RankAgreement | None
    rank_pairs: list[tuple[str, list[str]]]  # inversions, as labels: (ranked higher by the reward, [preferred by people])
    messages: list[str]

    @property
    def ranked(self) -> list[Row]:
        return [r for r in self.rows if r.votes]


def _score(result: str, both_bad: str) -> float | None:
    if result == Vote.FIRST:
        return 1.0
    if result == Vote.SECOND:
        return 0.0
    if result == Vote.BOTH_BAD and both_bad == "drop":
        return None
    return 0.5


def build_leaderboard(experiment: Experiment, step: int | None = None, both_bad: str = "tie",
                      rounds: int = ROUNDS, seed: int = 0) -> Leaderboard:
    both_bad = both_bad if both_bad in BOTH_BAD_CHOICES else "tie"
    arena = Arena(experiment)
    step = arena.step
    rows = list(Vote.objects.at(experiment).order_by("updated", "id").values_list(
        "first", "second", "outcome", "left_is_first", "rater_id", "prompt_id", "previous_result", "revisions"))

    keys = sorted(set(arena.contestants) | {r[0] for r in rows} | {r[1] for r in rows})
    index = {k: n for n, k in enumerate(keys)}
    n = len(keys)
    results = [Vote.result_of(r[2], r[3]) for r in rows]
    i, j, s = [], [], []
    for r, result in zip(rows, results, strict=True):
        score = _score(result, both_bad)
        if score is not None:
            i.append(index[r[0]])
            j.append(index[r[1]])
            s.append(score)
    fit = bt.bradley_terry(n, i, j, s, rounds=rounds, seed=seed)
    elo = bt.elo(n, i, j, s)
    rewards = arena.rewards(keys)
    scored = fit.wins.sum(axis=1)

    table = []
    for k, key in enumerate(keys):
        votes = int(fit.votes[k])
        row = Row(key=key, label=arena.label(key), method=arena.method(key), votes=votes, reward=rewards.get(key))
        if votes:
            row.score, row.theta, row.elo = float(fit.score[k]), float(fit.theta[k]), float(elo[k])
            row.low, row.high = float(fit.score_low[k]), float(fit.score_high[k])
            row.win_rate = float(scored[k] / votes)
            row.perfect = k in fit.perfect
        table.append(row)
    voted = [r for r in table if r.votes]
    for row in voted:
        row.rank = 1 + sum(other.low > row.high for other in voted if other is not row)
    table.sort(key=lambda r: (r.votes == 0, -(r.score or 0.0), r.label))
    _bars(voted)
    order = [index[r.key] for r in table]
    win_rate = bt.win_rate_matrix(fit.wins, fit.games)

    rewarded = [r for r in voted if r.reward is not None and math.isfinite(r.reward)]
    for row in rewarded:
        row.reward_rank = 1 + sum(other.reward > row.reward for other in rewarded)
    rank = None
    rank_pairs: list[tuple[str, list[str]]] = []
    if len(rewarded) >= 2:
        rank = bt.rank_agreement([r.theta for r in rewarded], [_theta(r.low) for r in rewarded],
                                 [_theta(r.high) for r in rewarded], [r.reward for r in rewarded])
        for a, b in sorted(rank.inversions):  # grouped: (the reward's favourite, [those people prefer to it])
            if rank_pairs and rank_pairs[-1][0] == rewarded[a].label:
                rank_pairs[-1][1].append(rewarded[b].label)
            else:
                rank_pairs.append((rewarded[a].label, [rewarded[b].label]))

    raters = _raters(rows, results)
    agreement = bt.agreement(((r[5], r[0], r[1]), r[4], result) for r, result in zip(rows, results, strict=True))
    names = {d["user_id"]: d["name"] for d in raters}
    for pair in agreement.by_pair:
        pair["names"] = " & ".join(names.get(u, f"user #{u}") for u in pair["raters"])
    position = bt.position_bias(sum(r[2] == Vote.Outcome.A for r in rows), sum(r[2] == Vote.Outcome.B for r in rows))

    messages = []
    if len(arena.contestants) < 2:
        messages.append("Fewer than two contestants to rate: rating starts when runs have finished (or the owner "
                        "includes runs still training).")
    if not rows:
        messages.append("No votes yet.")
    if arena.waiting:
        messages.append(f"{len(arena.waiting)} run(s) still training are not rated until they finish (or the owner "
                        "includes them).")
    for row in table:
        if row.perfect:
            what = "won" if row.win_rate == 1 else "lost"
            messages.append(f"{row.label} {what} every one of its {row.votes} votes: only the prior keeps its score "
                            "finite, read it as a bound.")
    missing = [r.label for r in table if not r.votes and r.key in arena.sources]
    if rows and missing:
        messages.append("No votes yet for " + ", ".join(missing) + ".")

    return Leaderboard(
        experiment=experiment, step=step, steps=[], both_bad=both_bad,
        rounds=rounds, n_votes=len(rows), n_dropped=len(rows) - len(s), rows=table,
        labels=[r.label for r in table],
        win_rate=[[win_rate[a][b] for b in order] for a in order],
        pair_votes=[[int(fit.games[a, b]) for b in order] for a in order],
        raters=raters, agreement=agreement if agreement.pairs else None, position=position,
        rank=rank, rank_pairs=rank_pairs, messages=messages)


def _theta(score: float) -> float:
    return (score - bt.ELO_BASE) / bt.ELO_SCALE


def _bars(rows: list[Row]) -> None:
    """Place each interval on a common scale (percent of the widest span), for the table's CI bars."""
    if not rows:
        return
    lo = min(r.low for r in rows)
    hi = max(r.high for r in rows)
    span = max(hi - lo, 1e-9)
    pad = 0.05 * span
    lo, span = lo - pad, span + 2 * pad
    for r in rows:
        r.bar = {"left": round(100 * (r.low - lo) / span, 2), "width": round(max(100 * (r.high - r.low) / span, 0.8), 2),
                 "mid": round(100 * (r.score - lo) / span, 2)}


def _raters(rows, results) -> list[dict]:
    users = get_user_model().objects.in_bulk({r[4] for r in rows})
    by: dict[int, dict] = {}
    for r, result in zip(rows, results, strict=True):
        d = by.setdefault(r[4], {"votes": 0, "left": 0, "right": 0, "ties": 0, "both_bad": 0, "repeats": 0,
                                 "consistent": 0})
        d["votes"] += 1
        d["left"] += r[2] == Vote.Outcome.A
        d["right"] += r[2] == Vote.Outcome.B
        d["ties"] += r[2] == Vote.Outcome.TIE
        d["both_bad"] += r[2] == Vote.Outcome.BOTH_BAD
        if r[7]:
            d["repeats"] += 1
            d["consistent"] += r[6] == result
    out = []
    for user_id, d in by.items():
        decisive = d["left"] + d["right"]
        user = users.get(user_id)
        out.append({**d, "user_id": user_id, "name": user.get_username() if user else f"user #{user_id}",
                    "share_left": d["left"] / decisive if decisive else None,
                    "consistency": d["consistent"] / d["repeats"] if d["repeats"] else None})
    return sorted(out, key=lambda d: (-d["votes"], d["name"]))


def leaderboard_context(experiment: Experiment, step: int | None = None, both_bad: str = "tie",
                        rounds: int = ROUNDS, figures: bool = True) -> dict:
    """What `templates/ratings/_leaderboard.html` needs: {"ratings": Leaderboard, "ratings_figures": {...}}.
    The figures are Plotly JSON strings (heatmaps); the page loads plotly.min.js and js/leaderboard.js."""
    board = build_leaderboard(experiment, step=step, both_bad=both_bad, rounds=rounds)
    context: dict = {"ratings": board, "tau_warn": bt.TAU_WARN}
    if figures and board.n_votes:  # the template shows them only then; building them costs 60-85 ms a view
        from webapp.ratings.figures import pair_votes_figure, win_rate_figure

        context["ratings_figures"] = {
            "win_rate": json.loads(win_rate_figure(board.labels, board.win_rate).to_json()),
            "pair_votes": json.loads(pair_votes_figure(board.labels, board.pair_votes).to_json()),
        }
    return context


def as_json(board: Leaderboard) -> dict:
    """The leaderboard as plain JSON-able data (reports, the API)."""
    def num(x):
        return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

    return {
        "experiment": board.experiment.pk, "step": board.step, "both_bad": board.both_bad, "votes": board.n_votes,
        "bootstrap_rounds": board.rounds,
        "rows": [{"contestant": r.key, "label": r.label, "method": r.method, "votes": r.votes, "rank": r.rank,
                  "bt_score": num(r.score), "bt_low": num(r.low), "bt_high": num(r.high), "elo": num(r.elo),
                  "win_rate": num(r.win_rate), "reward": num(r.reward)} for r in board.rows],
        "labels": board.labels, "win_rate": board.win_rate, "pair_votes": board.pair_votes,
        "raters": [{k: v for k, v in d.items() if k != "user_id"} for d in board.raters],
        "agreement": None if board.agreement is None else {
            "items": board.agreement.items, "percent": board.agreement.percent, "kappa": board.agreement.kappa},
        "position_bias": {"left": board.position.left, "right": board.position.right,
                          "share_left": board.position.share_left},
        "kendall_tau": None if board.rank is None else board.rank.tau,
        "human_reward_disagree": bool(board.rank and board.rank.disagree),
        "base_contestant": BASE,
    }

