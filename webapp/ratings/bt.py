"""Statistics of pairwise votes. Pure numpy, no Django: the leaderboard's numbers, testable on their own.

Votes arrive as three arrays over contestants 0..n-1: `i`, `j` (the two contestants) and `s`, the score
of `i` against `j`: 1 (i better), 0 (j better), 0.5 (tie; "both are bad" too, unless dropped upstream).

- Bradley-Terry: P(i beats j) = sigmoid(theta_i - theta_j), fitted by Newton's method with a small
  ridge prior (theta ~ N(0, 1/ridge)), so a contestant that wins every vote, or has no votes at all,
  still gets a finite score (no votes: exactly 0). Ties count half a win for each side.
- Bootstrap: resample votes with replacement. Votes are first grouped into at most 3 n(n-1)/2 kinds
  (pair x outcome), so one round is one multinomial draw, and all rounds are fitted at once (batched).
- Elo (online, in vote order), win-rate and votes-per-pair matrices, Cohen's kappa, Kendall's tau-b,
  the share of decisive votes that went to the left side (position bias) with a Wilson interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

RIDGE = 0.01  # prior precision on theta: worth ~0.04 of a vote; keeps perfect records finite
ELO_SCALE = 400 / math.log(10)  # theta (natural log-odds) -> Elo points
ELO_BASE = 1000.0
ELO_K = 16.0
MAX_STEP = 2.0  # Newton steps are scaled down to at most this (in theta) per iteration


# --- Bradley-Terry -----------------------------------------------------------------------------------

def pair_tables(n: int, i, j, s) -> tuple[np.ndarray, np.ndarray]:
    """wins[a, b]: points a scored against b (ties half); games[a, b]: votes between a and b (symmetric)."""
    i, j, s = np.asarray(i, dtype=np.intp), np.asarray(j, dtype=np.intp), np.asarray(s, dtype=float)
    wins = np.zeros((n, n))
    games = np.zeros((n, n))
    np.add.at(wins, (i, j), s)
    np.add.at(wins, (j, i), 1.0 - s)
    np.add.at(games, (i, j), 1.0)
    np.add.at(games, (j, i), 1.0)
    return wins, games


def fit_bt(wins: np.ndarray, games: np.ndarray, ridge: float = RIDGE, tol: float = 1e-9,
           max_iter: int = 200) -> np.ndarray:
    """Maximum a posteriori log-strengths theta for tables of shape (n, n) or a batch (B, n, n).

    Maximises sum_ab wins[a,b] log sigmoid(theta_a - theta_b) - ridge/2 |theta|^2. The objective is
    strictly concave, Newton's method converges in a handful of iterations; steps are capped at MAX_STEP
    so that a far-off start (a perfect record) cannot overshoot."""
    if ridge <= 0:
        raise ValueError("ridge must be positive: without a prior, perfect records have no finite maximum")
    wins = np.asarray(wins, dtype=float)
    games = np.asarray(games, dtype=float)
    single = wins.ndim == 2
    if single:
        wins, games = wins[None], games[None]
    batch, n, _ = wins.shape
    theta = np.zeros((batch, n))
    if n == 0:
        return theta[0] if single else theta
    eye = np.eye(n)
    scored = wins.sum(axis=2)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[:, None, :] - theta[:, :, None]))  # p[b, a, c] = P(a beats c)
        grad = scored - (games * p).sum(axis=2) - ridge * theta
        w = games * p * (1.0 - p)
        hess = -w + eye * (w.sum(axis=2)[:, :, None] + ridge)  # minus the Hessian: positive definite
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        size = np.abs(step).max(axis=1, keepdims=True)
        step *= np.minimum(1.0, MAX_STEP / np.maximum(size, 1e-300))
        theta += step
        if size.max() < tol:
            break
    return theta[0] if single else theta


def _vote_kinds(n: int, i, j, s) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group votes into kinds (lower index, higher index, score of the lower): returns the kinds' a, b,
    score and count."""
    i, j, s = np.asarray(i, dtype=np.intp), np.asarray(j, dtype=np.intp), np.asarray(s, dtype=float)
    swap = i > j
    a, b = np.where(swap, j, i), np.where(swap, i, j)
    score = np.where(swap, 1.0 - s, s)
    code = np.rint(score * 2).astype(np.intp)  # 0, 1 (tie), 2
    keys, counts = np.unique((a * n + b) * 3 + code, return_counts=True)
    pair, code = np.divmod(keys, 3)
    ka, kb = np.divmod(pair, n)
    return ka, kb, code / 2.0, counts


def bootstrap_bt(n: int, i, j, s, rounds: int = 1000, seed: int = 0, ridge: float = RIDGE) -> np.ndarray:
    """Thetas of `rounds` bootstrap resamples of the votes, shape (rounds, n)."""
    if len(i) == 0 or rounds <= 0:
        return np.zeros((max(rounds, 0), n))
    ka, kb, score, counts = _vote_kinds(n, i, j, s)
    kinds = len(counts)
    # One row per kind: where its points and games land in the flattened (n, n) tables.
    to_wins = np.zeros((kinds, n * n))
    to_games = np.zeros((kinds, n * n))
    rows = np.arange(kinds)
    to_wins[rows, ka * n + kb] = score
    to_wins[rows, kb * n + ka] = 1.0 - score
    to_games[rows, ka * n + kb] = 1.0
    to_games[rows, kb * n + ka] = 1.0
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=rounds).astype(float)
    wins = (draws @ to_wins).reshape(rounds, n, n)
    games = (draws @ to_games).reshape(rounds, n, n)
    return fit_bt(wins, games, ridge=ridge)


@dataclass
class BTResult:
    theta: np.ndarray  # centred log-strengths (mean 0 over contestants with votes)
    low: np.ndarray  # 2.5 % bootstrap percentile (centred the same way); nan without votes
    high: np.ndarray
    votes: np.ndarray  # votes each contestant took part in
    wins: np.ndarray
    games: np.ndarray
    rounds: int
    perfect: list[int] = field(default_factory=list)  # won (or lost) every vote: only the prior bounds it

    @property
    def score(self) -> np.ndarray:
        """On the Elo scale, as Chatbot Arena reports Bradley-Terry: 1000 + 400 log10(e) theta."""
        return ELO_BASE + ELO_SCALE * self.theta

    @property
    def score_low(self) -> np.ndarray:
        return ELO_BASE + ELO_SCALE * self.low

    @property
    def score_high(self) -> np.ndarray:
        return ELO_BASE + ELO_SCALE * self.high


def _centre(theta: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return theta
    return theta - theta[..., mask].mean(axis=-1, keepdims=True)


def bradley_terry(n: int, i, j, s, rounds: int = 1000, seed: int = 0, ridge: float = RIDGE) -> BTResult:
    """Scores and 95 % percentile-bootstrap intervals. Contestants without votes get theta 0 and nan bounds."""
    wins, games = pair_tables(n, i, j, s)
    votes = games.sum(axis=1)
    has = votes > 0
    theta = _centre(fit_bt(wins, games, ridge=ridge), has)
    low = np.full(n, np.nan)
    high = np.full(n, np.nan)
    if has.any() and rounds > 0:
        boot = _centre(bootstrap_bt(n, i, j, s, rounds=rounds, seed=seed, ridge=ridge), has)
        low[has], high[has] = np.percentile(boot[:, has], [2.5, 97.5], axis=0)
    scored = wins.sum(axis=1)
    perfect = [k for k in range(n) if has[k] and (scored[k] == votes[k] or scored[k] == 0)]
    return BTResult(theta=theta, low=low, high=high, votes=votes, wins=wins, games=games, rounds=rounds,
                    perfect=perfect)


# --- Elo and matrices --------------------------------------------------------------------------------

def elo(n: int, i, j, s, k: float = ELO_K, base: float = ELO_BASE) -> np.ndarray:
    """Online Elo over the votes in the order given (chronological): familiar, but order-dependent."""
    rating = [base] * n
    for a, b, score in zip(np.asarray(i).tolist(), np.asarray(j).tolist(), np.asarray(s, dtype=float).tolist(),
                           strict=True):
        expected = 1.0 / (1.0 + 10 ** ((rating[b] - rating[a]) / 400))
        rating[a] += k * (score - expected)
        rating[b] -= k * (score - expected)
    return np.array(rating)


def win_rate_matrix(wins: np.ndarray, games: np.ndarray) -> list[list[float | None]]:
    """rate[a][b]: share of points a took against b (ties half); None where they never met."""
    n = len(wins)
    return [[float(wins[a, b] / games[a, b]) if games[a, b] else None for b in range(n)] for a in range(n)]


# --- agreement ---------------------------------------------------------------------------------------

def cohen_kappa(x: Sequence[Hashable], y: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when undefined (no items, or both
    raters always gave one and the same label: chance agreement is 1)."""
    if len(x) != len(y):
        raise ValueError("x and y must label the same items")
    if not x:
        return None
    total = len(x)
    observed = sum(a == b for a, b in zip(x, y, strict=True)) / total
    cx, cy = defaultdict(int), defaultdict(int)
    for a in x:
        cx[a] += 1
    for b in y:
        cy[b] += 1
    expected = sum(cx[c] * cy.get(c, 0) for c in cx) / total**2
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def percent_agreement(x: Sequence[Hashable], y: Sequence[Hashable]) -> float | None:
    return sum(a == b for a, b in zip(x, y, strict=True)) / len(x) if x else None


@dataclass
class Agreement:
    items: int  # items rated by at least two raters
    pairs: int  # (item, rater pair) comparisons
    percent: float | None
    kappa: float | None  # pooled over all rater pairs
    by_pair: list[dict]  # {"raters": (u, v), "items", "percent", "kappa"}


def agreement(labels: Iterable[tuple[Hashable, Hashable, Hashable]]) -> Agreement:
    """Inter-rater agreement from (item, rater, label) triples (one label per rater and item)."""
    by_item: dict[Hashable, dict[Hashable, Hashable]] = defaultdict(dict)
    for item, rater, label in labels:
        by_item[item][rater] = label
    pooled_x, pooled_y = [], []
    per_pair: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
    shared = 0
    for ratings in by_item.values():
        if len(ratings) < 2:
            continue
        shared += 1
        for u, v in combinations(sorted(ratings, key=str), 2):
            xs, ys = per_pair[(u, v)]
            xs.append(ratings[u])
            ys.append(ratings[v])
            pooled_x.append(ratings[u])
            pooled_y.append(ratings[v])
    by_pair = [{"raters": key, "items": len(xs), "percent": percent_agreement(xs, ys), "kappa": cohen_kappa(xs, ys)}
               for key, (xs, ys) in sorted(per_pair.items(), key=lambda kv: -len(kv[1][0]))]
    return Agreement(items=shared, pairs=len(pooled_x), percent=percent_agreement(pooled_x, pooled_y),
                     kappa=cohen_kappa(pooled_x, pooled_y), by_pair=by_pair)


# --- position bias -----------------------------------------------------------------------------------

def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PositionBias:
    left: int  # decisive votes for the left side ("A is better")
    right: int
    share_left: float | None
    interval: tuple[float, float] | None  # 95 % Wilson interval of share_left
    biased: bool  # the interval excludes 1/2


def position_bias(left: int, right: int) -> PositionBias:
    n = left + right
    interval = wilson_interval(left, n)
    biased = interval is not None and n >= 10 and (interval[0] > 0.5 or interval[1] < 0.5)
    return PositionBias(left=left, right=right, share_left=left / n if n else None, interval=interval,
                        biased=biased)


# --- human ranking against the reward ----------------------------------------------------------------

def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties in either ranking accounted for); None with fewer than two items or when
    one ranking is all ties."""
    n = len(x)
    if n != len(y):
        raise ValueError("x and y must have the same length")
    concordant = discordant = ties_x = ties_y = 0
    for a, b in combinations(range(n), 2):
        dx = (x[a] > x[b]) - (x[a] < x[b])
        dy = (y[a] > y[b]) - (y[a] < y[b])
        if dx == 0 and dy == 0:
            ties_x += 1
            ties_y += 1
        elif dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / denominator if denominator else None


TAU_WARN = 0.5  # below this, the human ranking and the reward ranking are said to disagree


@dataclass
class RankAgreement:
    tau: float | None
    n: int  # contestants with both votes and a reward
    inversions: list[tuple[int, int]]  # (a, b): reward ranks a above b, people rank b above a, intervals apart
    disagree: bool


def rank_agreement(theta: Sequence[float], low: Sequence[float], high: Sequence[float],
                   reward: Sequence[float]) -> RankAgreement:
    """Kendall's tau between the human scores and the reward, and the pairs the reward orders one way
    while people, with non-overlapping 95 % intervals, order the other (how reward hacking shows)."""
    tau = kendall_tau(list(theta), list(reward))
    inversions = []
    for a, b in combinations(range(len(theta)), 2):
        if reward[a] < reward[b]:
            a, b = b, a
        if reward[a] > reward[b] and high[a] < low[b]:
            inversions.append((a, b))
    disagree = bool(inversions) or (tau is not None and tau < TAU_WARN)
    return RankAgreement(tau=tau, n=len(theta), inversions=inversions, disagree=disagree)
