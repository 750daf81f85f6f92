"""The comparison's figures, in two steps (as Optuna's plotting does):

1. The data step, on plain lists, with neither Django nor Plotly: downsampling that keeps every
   series' first, last, minimum and maximum (`Series`, `downsample`), EMA smoothing (`ema`), the
   mean of seeds with a 95% confidence band (`mean_ci`, `mean_band`), each method's Pareto front of
   (KL, reward) points (`pareto_front`), the reward gained per nat of KL (`reward_per_nat`) and the
   summary rows (`summary`).
2. The figure step: `go.Figure`s built from the data step's output (`build_figures`), sent to the
   browser as JSON and drawn there by plotly.js; exported reports can reuse the same builders.

User-chosen names (experiments, methods) go into figures HTML-escaped: plotly renders a subset of
HTML in trace names. Model output never goes into a figure.
"""

from __future__ import annotations

import html
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_POINTS = 500  # per trace: 4 points (first, last, min, max) per bucket of steps
MAX_BUCKETS = MAX_POINTS // 4

Point = tuple[int, float, float]  # (step, value, wall time: seconds since the epoch)

# --- downsampling -------------------------------------------------------------------------------------


class _Bucket:
    """First, last, minimum and maximum point of one bucket of steps, and the sum and count of its values."""

    __slots__ = ("first", "last", "lo", "hi", "total", "count")

    def __init__(self, p: Point):
        self.first = self.last = self.lo = self.hi = p
        self.total = p[1]
        self.count = 1

    def add(self, p: Point) -> None:
        step, value = p[0], p[1]
        if step < self.first[0]:
            self.first = p
        if step >= self.last[0]:
            self.last = p
        lo, hi = self.lo, self.hi
        if value < lo[1] or (value == lo[1] and step < lo[0]):
            self.lo = p
        if value > hi[1] or (value == hi[1] and step < hi[0]):
            self.hi = p
        self.total += value
        self.count += 1

    def merge(self, other: _Bucket) -> None:
        self._take(other.first, other.last, other.lo, other.hi)
        self.total += other.total
        self.count += other.count

    def _take(self, first: Point, last: Point, lo: Point, hi: Point) -> None:
        if first[0] < self.first[0]:
            self.first = first
        if last[0] >= self.last[0]:
            self.last = last
        # Ties go to the earlier step, so the result does not depend on the order points arrive in.
        if lo[1] < self.lo[1] or (lo[1] == self.lo[1] and lo[0] < self.lo[0]):
            self.lo = lo
        if hi[1] > self.hi[1] or (hi[1] == self.hi[1] and hi[0] < self.hi[0]):
            self.hi = hi


class Series:
    """One metric series, downsampled as its points arrive (min/max bucketing, "M4": the first, last,
    minimum and maximum point of each bucket of steps).

    Buckets are `width` steps wide, `width` a power of two. When there are more than `max_buckets`,
    the width doubles and neighbouring buckets merge; merging is exact, so the result is the same as
    bucketing everything at once. At most 4 * max_buckets points are kept, and the series' own first,
    last, minimum and maximum point are always among them. Points may arrive in any order. Missing
    values (NaN, infinity, NULL) are counted, not kept."""

    def __init__(self, max_buckets: int = MAX_BUCKETS):
        self.max_buckets = max(1, max_buckets)
        self.width = 1
        self.buckets: dict[int, _Bucket] = {}
        self.missing = 0

    def add(self, step: int, value: float | None, wall: float = 0.0) -> None:
        if value is None or not math.isfinite(value):
            self.missing += 1
            return
        p = (step, value, wall)
        key = step // self.width
        bucket = self.buckets.get(key)
        if bucket is None:
            self.buckets[key] = _Bucket(p)
            if len(self.buckets) > self.max_buckets:
                self._coarsen()
        else:
            bucket.add(p)

    def extend(self, points: Iterable[Point]) -> Series:
        for p in points:
            self.add(*p)
        return self

    def _coarsen(self) -> None:
        while len(self.buckets) > self.max_buckets:
            self.width *= 2
            merged: dict[int, _Bucket] = {}
            for key in sorted(self.buckets):
                bucket = self.buckets[key]
                into = merged.get(key // 2)
                if into is None:
                    merged[key // 2] = bucket
                else:
                    into.merge(bucket)
            self.buckets = merged

    def __len__(self) -> int:
        return sum(b.count for b in self.buckets.values())

    def snapshot(self) -> SeriesData:
        """The kept points and the bucket means, as plain lists (safe to use while more points arrive)."""
        points: list[Point] = []
        means: list[tuple[int, float, int, float]] = []
        for key in sorted(self.buckets):
            b = self.buckets[key]
            points.extend(sorted({b.first, b.lo, b.hi, b.last}))
            means.append((b.last[0], b.total / b.count, b.count, b.last[2]))
        return SeriesData(points=points, means=means)


@dataclass(frozen=True)
class SeriesData:
    """A downsampled series: `points` (step, value, wall) sorted by step, and per bucket of steps
    (step of its last point, mean value, number of points, wall time of its last point)."""

    points: list[Point] = field(default_factory=list)
    means: list[tuple[int, float, int, float]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.points)

    @property
    def first(self) -> Point | None:
        return self.points[0] if self.points else None

    @property
    def last(self) -> Point | None:
        return self.points[-1] if self.points else None

    def value_at(self, step: int) -> float | None:
        """The value logged at `step` if kept, else linearly interpolated; None outside the series."""
        steps = [p[0] for p in self.points]
        return interp(steps, [p[1] for p in self.points], step)


def downsample(points: Iterable[Point], max_points: int = MAX_POINTS) -> list[Point]:
    """At most `max_points` of `points` (step, value, wall), keeping the first, last, minimum and maximum."""
    return Series(max(1, max_points // 4)).extend(points).snapshot().points


# --- smoothing ----------------------------------------------------------------------------------------


def ema(values: Sequence[float], weight: float, counts: Sequence[int] | None = None) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased (it starts from the first
    value, not from zero). `weight` 0 returns the values unchanged; 0.99 smooths hard.

    `counts[i]` is how many raw points value i stands for (a bucket mean of a downsampled series): it
    weighs `weight ** counts[i]`, so smoothing bucket means approximates smoothing the raw points."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), not {weight}")
    out: list[float] = []
    last = 0.0
    seen = 0
    for i, value in enumerate(values):
        c = 1 if counts is None else counts[i]
        w = weight ** c
        last = last * w + (1.0 - w) * value
        seen += c
        debias = 1.0 - weight ** seen
        out.append(last / debias if debias > 0 else value)
    return out


def smoothed(data: SeriesData, weight: float) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, shown values, raw values, wall times) of a series. Unsmoothed: the kept points, exact.
    Smoothed: the EMA of the bucket means (for a series that was not downsampled, of the raw points)."""
    if weight <= 0:
        pts = data.points
        values = [p[1] for p in pts]
        return [p[0] for p in pts], values, values, [p[2] for p in pts]
    means = data.means
    raw = [m[1] for m in means]
    return [m[0] for m in means], ema(raw, weight, [m[2] for m in means]), raw, [m[3] for m in means]


# --- statistics ---------------------------------------------------------------------------------------

# Two-sided 95% critical values of Student's t, df = 1..30 (beyond, a Cornish-Fisher expansion).
_T975 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
         2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
         2.131449546, 2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
         2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
         2.045229642, 2.042272456)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (half-width factor of a 95% CI)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Estimate:
    """A mean over `n` values with the half-width of its 95% t interval (None for fewer than 2)."""

    mean: float | None
    half: float | None
    n: int

    @property
    def lo(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean - self.half

    @property
    def hi(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean + self.half

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "–"
        shown = _fmt(self.mean, digits)
        return shown if self.half is None else f"{shown} ± {_fmt(self.half, digits)}"


def mean_ci(values: Iterable[float | None]) -> Estimate:
    """Mean and 95% confidence half-width (t distribution, sample standard deviation) of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return Estimate(None, None, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return Estimate(mean, None, 1)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return Estimate(mean, t975(n - 1) * sd / math.sqrt(n), n)


def interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """Linear interpolation in sorted `xs`; exact at a knot, None outside [xs[0], xs[-1]]."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    i = bisect_left(xs, x)
    if xs[i] == x:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class Band:
    """Mean of several curves with a 95% confidence band, on a common grid of steps."""

    steps: list[int]
    mean: list[float]
    lo: list[float]
    hi: list[float]
    n: int


def mean_band(curves: Sequence[tuple[Sequence[int], Sequence[float]]], max_points: int = MAX_POINTS) -> Band | None:
    """The mean and 95% t band of curves (steps, values) — seeds of one method — over the steps all of
    them cover. The grid is the union of their steps there (thinned to `max_points`); a curve without
    a point at a grid step is interpolated linearly. None for fewer than two curves."""
    curves = [(list(xs), list(ys)) for xs, ys in curves if len(xs)]
    if len(curves) < 2:
        return None
    start = max(xs[0] for xs, _ in curves)
    end = min(xs[-1] for xs, _ in curves)
    if start > end:
        return None
    grid = sorted({x for xs, _ in curves for x in xs if start <= x <= end})
    grid = _thin(grid, max_points)
    n = len(curves)
    factor = t975(n - 1) / math.sqrt(n)
    columns = [_interp_many(xs, ys, grid) for xs, ys in curves]
    mean, lo, hi = [], [], []
    for values in zip(*columns, strict=True):
        m = math.fsum(values) / n
        half = factor * math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))
        mean.append(m)
        lo.append(m - half)
        hi.append(m + half)
    return Band(grid, mean, lo, hi, n)


def _interp_many(xs: Sequence[float], ys: Sequence[float], grid: Sequence[float]) -> list[float]:
    """interp at each of the sorted `grid` points, all inside [xs[0], xs[-1]] (one pass)."""
    out, i, last = [], 0, len(xs) - 1
    for x in grid:
        while i < last and xs[i + 1] <= x:
            i += 1
        if xs[i] == x or i == last:
            out.append(ys[i])
        else:
            x0, x1 = xs[i], xs[i + 1]
            out.append(ys[i] + (ys[i + 1] - ys[i]) * (x - x0) / (x1 - x0))
    return out


def _thin(xs: list, n: int) -> list:
    if len(xs) <= n:
        return xs
    last = len(xs) - 1
    return [xs[round(i * last / (n - 1))] for i in range(n)]


def pareto_front(points: Iterable[tuple]) -> list[tuple]:
    """The points (kl, reward, ...) that no other point beats: none has lower-or-equal KL and
    higher-or-equal reward, one of them strictly. Sorted by KL; extra tuple items ride along."""
    front = []
    best = -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            front.append(p)
            best = p[1]
    return front


MIN_KL = 1e-6  # nats: below this (or a negative Monte-Carlo estimate), no per-nat figure


def reward_per_nat(reward_start: float | None, reward_end: float | None, kl_end: float | None) -> float | None:
    """Reward gained per nat of KL spent: (final reward - reward at step 0) / final KL. None when the
    KL is about zero or negative (estimates are noisy), or a value is missing."""
    if reward_start is None or reward_end is None or kl_end is None or not kl_end > MIN_KL:
        return None
    return (reward_end - reward_start) / kl_end


# --- the runs compared --------------------------------------------------------------------------------

METHOD_COLORS = {"sft": "#7048e8", "dpo": "#1c7ed6", "ppo": "#e8590c", "grpo": "#2f9e44", "rloo": "#c2255c"}
OTHER_COLORS = ("#0c8599", "#5c940d", "#862e9c", "#d9480f", "#364fc7")
DASHES = ("solid", "dash", "dot", "longdash", "dashdot")


@dataclass
class RunData:
    """One run as the figures see it: labels, and its series by metric name (the data step's input)."""

    id: int
    label: str  # "DPO seed 0" (or "experiment · DPO seed 0" across experiments)
    group: str  # runs of a group are seeds of one method (of one experiment)
    group_label: str
    method: str
    seed: int = 0
    state: str = "succeeded"
    active: bool = False
    experiment: int = 0  # position of the run's experiment in the comparison: its line dash
    series: dict[str, SeriesData] = field(default_factory=dict)
    color: str = "#495057"
    dash: str = "solid"
    _clock: tuple | None = field(default=None, init=False, repr=False)

    def get(self, *names: str) -> SeriesData:
        """The first of `names` this run logged (an empty series if none)."""
        for name in names:
            data = self.series.get(name)
            if data:
                return data
        return SeriesData()

    def clock(self) -> tuple[list[int], list[float]]:
        """Step -> seconds since the run's first logged point, from the points kept of every series."""
        if self._clock is None:
            walls: dict[int, float] = {}
            for data in self.series.values():
                for step, _, wall in data.points:
                    if wall < walls.get(step, math.inf):
                        walls[step] = wall
            steps = sorted(walls)
            t0 = min(walls.values()) if walls else 0.0
            elapsed, latest = [], 0.0
            for step in steps:
                latest = max(latest, walls[step] - t0)  # monotonic
                elapsed.append(latest)
            self._clock = (steps, elapsed)
        return self._clock

    def tokens(self) -> tuple[list[int], list[float]]:
        """Step -> tokens seen (train/num_tokens, 0 at step 0); empty if the trainer does not count them."""
        pts = self.series.get(TOKENS)
        if not pts:
            return [], []
        steps, values = [p[0] for p in pts.points], [p[1] for p in pts.points]
        if steps[0] > 0:
            steps, values = [0, *steps], [0.0, *values]
        return steps, values


def style_runs(runs: list[RunData]) -> list[RunData]:
    """A colour per method (lighter for later seeds); a dash per experiment where one method comes from
    several experiments (else every line is solid: dotted noisy lines read badly)."""
    seen_in_group: dict[str, int] = {}
    others: dict[str, str] = {}
    experiments_of: dict[str, set[int]] = {}
    for run in runs:
        experiments_of.setdefault(run.method, set()).add(run.experiment)
    dashed = any(len(e) > 1 for e in experiments_of.values())
    for run in runs:
        base = METHOD_COLORS.get(run.method)
        if base is None:
            base = others.setdefault(run.method, OTHER_COLORS[len(others) % len(OTHER_COLORS)])
        k = seen_in_group.get(run.group, 0)
        seen_in_group[run.group] = k + 1
        run.color = _lighten(base, min(0.55, 0.18 * k))
        run.dash = DASHES[run.experiment % len(DASHES)] if dashed else "solid"
    return runs


def group_color(runs: list[RunData], group: str) -> str:
    for run in runs:
        if run.group == group:
            return METHOD_COLORS.get(run.method, run.color)
    return "#495057"


def _lighten(hex_color: str, amount: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    r, g, b = (round(c + (255 - c) * amount) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def groups_of(runs: list[RunData]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for run in runs:
        out.setdefault(run.group, []).append(run)
    return out


# --- summary ------------------------------------------------------------------------------------------

REWARD, KL, PROXY, TOKENS = "eval/reward", "eval/kl", "eval/proxy_reward", "train/num_tokens"
LOSS_KEYS = ("train/loss", "train/loss/total")  # PPO (ours) logs its total loss as loss/total


@dataclass(frozen=True)
class RunSummary:
    reward: float | None
    kl: float | None
    per_nat: float | None
    steps_per_s: float | None
    tokens: float | None
    wall_s: float | None
    last_step: int | None


def run_summary(run: RunData) -> RunSummary:
    """Final eval/reward and eval/kl, reward gained per nat, throughput, tokens and wall time of a run
    (wall time and steps/s between its first and last logged point, evaluations included)."""
    reward, kl, tokens = run.series.get(REWARD), run.series.get(KL), run.series.get(TOKENS)
    r_end = reward.last[1] if reward else None
    r_start = reward.first[1] if reward and reward.first[0] == 0 else None
    kl_end = kl.last[1] if kl else None
    steps, elapsed = run.clock()
    wall = elapsed[-1] if elapsed else None
    span = steps[-1] - steps[0] if steps else 0
    return RunSummary(
        reward=r_end, kl=kl_end, per_nat=reward_per_nat(r_start, r_end, kl_end),
        steps_per_s=span / wall if wall and span > 0 else None,
        tokens=tokens.last[1] if tokens else None, wall_s=wall, last_step=steps[-1] if steps else None)


SUMMARY_COLUMNS = (  # (key, heading, digits)
    ("reward", "Final eval/reward", 3), ("kl", "Final eval/kl (nats)", 3), ("per_nat", "Reward gained per nat", 3),
    ("steps_per_s", "Steps/s", 2), ("tokens", "Tokens", 0), ("wall_s", "Wall time (s)", 1),
)


def summary(runs: list[RunData]) -> dict:
    """Rows of the summary table: per group (method) the mean and 95% CI over its runs (seeds) of each
    column, and per run its own values. `cells` are formatted text in column order; `numbers` ride
    along for reports."""
    per_run = {run.id: run_summary(run) for run in runs}
    groups = []
    for key, members in groups_of(runs).items():
        cells, numbers = [], {}
        for col, _, digits in SUMMARY_COLUMNS:
            est = mean_ci(getattr(per_run[r.id], col) for r in members)
            cells.append(est.text(digits))
            numbers[col] = {"mean": est.mean, "half": est.half, "n": est.n}
        states = [r.state for r in members]
        groups.append({"group": key, "label": members[0].group_label, "color": group_color(runs, key),
                       "runs": len(members), "active": sum(r.active for r in members),
                       "states": ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)),
                       "cells": cells, "numbers": numbers})
    rows = []
    for run in runs:
        s = per_run[run.id]
        rows.append({"run": run.id, "label": run.label, "color": run.color, "state": run.state,
                     "step": s.last_step, "cells": [_fmt(getattr(s, col), digits) for col, _, digits in SUMMARY_COLUMNS],
                     "numbers": {col: getattr(s, col) for col, _, _ in SUMMARY_COLUMNS}})
    return {"columns": [{"key": k, "label": label} for k, label, _ in SUMMARY_COLUMNS], "groups": groups, "runs": rows}


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if x != 0 and abs(x) >= 1e6:
        return f"{x:.3g}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.2g}"
    return f"{x:.{digits}f}"


# --- the figure step ----------------------------------------------------------------------------------

X_MODES = {"step": "step", "tokens": "tokens seen", "wall": "wall time (s)"}


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    keys: tuple[str, ...]  # a run's first logged key is drawn
    ytitle: str


PANELS = (  # training loss and method panels, from the trainers' own train/* keys
    Panel("loss", "Training loss", LOSS_KEYS, "loss"),
    Panel("dpo_margins", "DPO: reward margin (chosen − rejected)", ("train/rewards/margins",), "margin"),
    Panel("dpo_accuracies", "DPO: reward accuracy", ("train/rewards/accuracies",), "accuracy"),
    Panel("ppo_value_loss", "PPO: value loss", ("train/loss/value",), "value loss"),
    Panel("ppo_clipfrac", "PPO: clip fraction", ("train/policy/clipfrac",), "fraction clipped"),
    Panel("ppo_approxkl", "PPO: approximate KL (old → new policy)", ("train/policy/approxkl",), "approx. KL"),
    Panel("train_reward", "Training reward (GRPO/RLOO group mean, PPO score)",
          ("train/reward", "train/objective/scores"), "reward"),
    Panel("reward_std", "GRPO/RLOO: reward spread within groups", ("train/reward_std",), "reward std"),
    Panel("completion_length", "Completion length in training", ("train/completions/mean_length",), "tokens"),
)
NEEDED_NAMES = tuple(dict.fromkeys((REWARD, KL, PROXY, TOKENS, *(k for p in PANELS for k in p.keys))))


def r6(x: float | None) -> float | None:
    """`x` rounded to DIGITS significant digits (a JSON half the size)."""
    return None if x is None else float(format(x, ".6g"))


def r6s(xs: Iterable[float | None]) -> list[float | None]:
    return [None if x is None else float(format(x, ".6g")) for x in xs]


class _Axis:
    """Maps a run's steps to the chosen x axis: steps, tokens seen or seconds of wall time."""

    def __init__(self, mode: str, runs: list[RunData]):
        if mode not in X_MODES:
            raise ValueError(f"x must be one of {sorted(X_MODES)}, not {mode!r}")
        self.mode = mode
        self.title = X_MODES[mode]
        self._maps: dict[int, tuple[list[int], list[float]]] = {}
        self._t0: dict[int, float] = {}
        for run in runs if mode != "step" else ():
            self._maps[run.id] = run.clock() if mode == "wall" else run.tokens()
            if mode == "wall":
                walls = [p[2] for data in run.series.values() for p in data.points]
                self._t0[run.id] = min(walls) if walls else 0.0

    def has(self, run: RunData) -> bool:
        return self.mode == "step" or bool(self._maps[run.id][0])

    def of(self, run: RunData, steps: Sequence[int], walls: Sequence[float] | None = None) -> list:
        """x of a run's points: their steps, their own wall time, or tokens seen interpolated at their step."""
        if self.mode == "step":
            return list(steps)
        if self.mode == "wall" and walls is not None:
            t0 = self._t0[run.id]
            return [round(max(0.0, w - t0), 1) for w in walls]
        xs, ys = self._maps[run.id]
        if not xs:
            return [None] * len(steps)
        # Beyond the last count (a final evaluation after the last training log): the last count.
        return [round(interp(xs, ys, min(max(s, xs[0]), xs[-1])), 1) for s in steps]

    def mean_of(self, runs: list[RunData], steps: Sequence[int]) -> list:
        """x of a seeds' mean: the mean over the runs of each one's x at that step."""
        if self.mode == "step":
            return list(steps)
        per_run = [self.of(r, steps) for r in runs if self.has(r)]
        if not per_run:
            return [None] * len(steps)
        return [None if any(v is None for v in col) else round(sum(col) / len(col), 1) for col in zip(*per_run, strict=True)]


def _layout(xtitle: str, ytitle: str, **extra) -> dict:
    axis = {"gridcolor": "#eef0f3", "zeroline": False, "linecolor": "#c9ced6", "ticks": "outside",
            "tickcolor": "#c9ced6", "automargin": True}
    layout = {
        "height": 360, "margin": {"l": 56, "r": 8, "t": 12, "b": 8},
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12, "color": "#1d2330"},
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff", "hovermode": "closest",
        "xaxis": {**axis, "title": {"text": xtitle}}, "yaxis": {**axis, "title": {"text": ytitle}},
        # On the right: below the plot, a long legend collides with the x axis title.
        "legend": {"x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top", "font": {"size": 11}, "tracegroupgap": 2},
        "hoverlabel": {"namelength": -1},
    }
    layout.update(extra)
    return layout


def _run_trace(run: RunData, xs, ys, raw, steps, ylabel: str, axis: _Axis, weight: float, *,
               faint: bool, name: str | None = None, dash: str | None = None, kind: str = "run") -> dict:
    name = name or run.label
    lines = [f"<b>{html.escape(name)}</b>", "step %{customdata[0]}" if axis.mode != "step" or weight > 0 else "step %{x}"]
    if axis.mode == "tokens":
        lines.append("tokens %{x:,.0f}")
    elif axis.mode == "wall":
        lines.append("%{x:.1f} s")
    if weight > 0:
        lines.append(f"{html.escape(ylabel)} %{{y:.4g}} (smoothed; raw %{{customdata[1]:.6g}})")
    else:
        lines.append(f"{html.escape(ylabel)} %{{y:.6g}}")
    trace = {
        "type": "scatter", "mode": "lines+markers" if len(xs) <= 30 else "lines", "x": xs,
        "y": r6s(ys), "name": html.escape(name), "uid": f"{kind}-{run.id}",
        "line": {"color": run.color, "width": 1.5 if faint else 2.2, "dash": dash or run.dash},
        "marker": {"size": 4}, "opacity": 0.55 if faint else 1.0, "legendgroup": f"{kind}-{run.id}",
        "hovertemplate": "<br>".join(lines) + "<extra></extra>", "meta": {"kind": kind, "run": run.id},
    }
    if axis.mode != "step" or weight > 0:
        trace["customdata"] = [list(c) for c in zip(steps, r6s(raw), strict=True)]
    return trace


def _curve_traces(runs: list[RunData], name: str, ylabel: str, axis: _Axis, weight: float,
                  *, band: bool = True) -> list[dict]:
    """One line per run; per group of two or more seeds, their mean with a 95% band."""
    traces, bands = [], []
    for members in groups_of(runs).values():
        with_data = [r for r in members if r.series.get(name) and axis.has(r)]
        curves = {}
        for run in with_data:
            steps, ys, raw, walls = smoothed(run.series[name], weight)
            curves[run.id] = (steps, ys)
            traces.append(_run_trace(run, axis.of(run, steps, walls), ys, raw, steps, ylabel, axis, weight,
                                     faint=band and len(with_data) > 1))
        if band and len(with_data) > 1:
            b = mean_band(list(curves.values()))
            if b is not None:
                bands.extend(_band_traces(with_data, b, ylabel, axis))
    return bands + traces


def _band_traces(members: list[RunData], b: Band, ylabel: str, axis: _Axis) -> list[dict]:
    first = members[0]
    color = METHOD_COLORS.get(first.method, first.color)
    xs = axis.mean_of(members, b.steps)
    group = f"mean-{first.group}"
    label = html.escape(f"{first.group_label} mean ± 95% CI ({b.n} seeds)")
    hover = (f"<b>{label}</b><br>step %{{customdata[0]}}<br>{html.escape(ylabel)} %{{y:.4g}}"
             f"<br>95% CI %{{customdata[1]:.4g}} to %{{customdata[2]:.4g}}<extra></extra>")
    return [
        {"type": "scatter", "mode": "lines", "x": xs + xs[::-1], "y": r6s(b.hi + b.lo[::-1]), "fill": "toself",
         "fillcolor": _rgba(color, 0.16), "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False,
         "legendgroup": group, "uid": f"band-{first.group}", "meta": {"kind": "band", "group": first.group}},
        {"type": "scatter", "mode": "lines", "x": xs, "y": r6s(b.mean), "name": label,
         "line": {"color": color, "width": 3, "dash": first.dash}, "legendgroup": group,
         "uid": f"mean-{first.group}", "meta": {"kind": "mean", "group": first.group},
         "customdata": [list(c) for c in zip(b.steps, r6s(b.lo), r6s(b.hi), strict=True)],
         "hovertemplate": hover},
    ]


def _figure(traces: list[dict], layout: dict) -> dict:
    """A plotly figure as a plain dict, ready for JSON. Building a `go.Figure` validates every point
    (and copies it twice): ~5x the cost of the data step, too slow on a page polled every few
    seconds. The tests validate each figure with `as_go`; exported reports can use it too."""
    return {"data": traces, "layout": layout}


def as_go(fig: dict):
    """The figure as a validated `plotly.graph_objects.Figure` (raises on any invalid property)."""
    import plotly.graph_objects as go

    return go.Figure(fig)


def reward_figure(runs: list[RunData], axis: _Axis, weight: float) -> dict:
    return _figure(_curve_traces(runs, REWARD, "reward", axis, weight), _layout(axis.title, "eval/reward (gold)"))


def kl_figure(runs: list[RunData], axis: _Axis, weight: float) -> dict:
    return _figure(_curve_traces(runs, KL, "KL", axis, weight), _layout(axis.title, "eval/kl (nats)"))


def frontier_points(run: RunData) -> list[tuple[float, float, int]]:
    """(kl, reward, step) of each evaluation of a run (KL interpolated if its series was downsampled
    differently from the reward's)."""
    reward, kl = run.series.get(REWARD), run.series.get(KL)
    if not reward or not kl:
        return []
    steps = [p[0] for p in kl.points]
    values = [p[1] for p in kl.points]
    out = []
    for step, r, _ in reward.points:
        k = interp(steps, values, step)
        if k is not None:
            out.append((k, r, step))
    return out


def frontier_figure(runs: list[RunData]) -> dict:
    """Every evaluation of every run as a point (x eval/kl, y eval/reward), joined per run in step
    order, and each group's Pareto front (highest reward for at most that KL) as a staircase."""
    traces, fronts = [], []
    for members in groups_of(runs).values():
        group_points = []
        for run in members:
            pts = frontier_points(run)
            if not pts:
                continue
            group_points.extend(pts)
            traces.append({
                "type": "scatter", "mode": "lines+markers", "x": r6s(p[0] for p in pts), "y": r6s(p[1] for p in pts),
                "name": html.escape(run.label), "uid": f"run-{run.id}", "meta": {"kind": "run", "run": run.id},
                "line": {"color": run.color, "width": 1.2, "dash": run.dash}, "marker": {"size": 5},
                "opacity": 0.7, "customdata": [p[2] for p in pts],
                "hovertemplate": f"<b>{html.escape(run.label)}</b><br>step %{{customdata}}<br>KL %{{x:.4g}} nats"
                                 "<br>reward %{y:.4g}<extra></extra>"})
        front = pareto_front(group_points)
        if front:
            first = members[0]
            color = METHOD_COLORS.get(first.method, first.color)
            label = html.escape(f"{first.group_label}: Pareto front")
            fronts.append({
                "type": "scatter", "mode": "lines+markers", "x": r6s(p[0] for p in front),
                "y": r6s(p[1] for p in front), "line": {"shape": "hv", "color": color, "width": 3, "dash": "dot"},
                "marker": {"size": 9, "symbol": "diamond-open", "line": {"width": 2}},
                "name": label, "uid": f"front-{first.group}", "meta": {"kind": "front", "group": first.group},
                "customdata": [p[2] for p in front],
                "hovertemplate": f"<b>{label}</b><br>step %{{customdata}}<br>KL %{{x:.4g}} nats<br>reward %{{y:.4g}}"
                                 "<extra></extra>"})
    return _figure(fronts + traces, _layout("eval/kl (nats from the reference)", "eval/reward (gold)"))


def proxy_figure(runs: list[RunData], axis: _Axis, weight: float) -> dict | None:
    """Gold (solid) and proxy (dashed) reward of each run that optimised a learned reward model:
    over-optimisation shows as the two parting."""
    traces = []
    for run in runs:
        if not run.series.get(PROXY) or not axis.has(run):
            continue
        for name, label, dash, kind in ((REWARD, "gold", "solid", "run"), (PROXY, "proxy", "dash", "proxy")):
            data = run.series.get(name)
            if not data:
                continue
            steps, ys, raw, walls = smoothed(data, weight)
            traces.append(_run_trace(run, axis.of(run, steps, walls), ys, raw, steps, f"{label} reward", axis, weight,
                                     faint=False, name=f"{run.label} ({label})", dash=dash, kind=kind))
    if not traces:
        return None
    return _figure(traces, _layout(axis.title, "reward"))


def panel_figure(runs: list[RunData], panel: Panel, axis: _Axis, weight: float) -> dict | None:
    traces = []
    for run in runs:
        key = next((k for k in panel.keys if run.series.get(k)), None)
        if key is None or not axis.has(run):
            continue
        steps, ys, raw, walls = smoothed(run.series[key], weight)
        traces.append(_run_trace(run, axis.of(run, steps, walls), ys, raw, steps, key, axis, weight, faint=False))
    if not traces:
        return None
    return _figure(traces, _layout(axis.title, panel.ytitle))


WIDE = {"reward", "kl", "frontier"}  # charts drawn across the page (more runs, more legend)
CHARTS = (  # (id, title, note) of the fixed charts, in page order
    ("reward", "Gold reward", "eval/reward on the held-out prompts; seeds' mean with a 95% band"),
    ("kl", "KL from the reference", "eval/kl: Monte-Carlo KL(policy ‖ reference), nats per sequence"),
    ("frontier", "Reward vs KL frontier", "every evaluation of every run; dotted: each method's Pareto front"),
    ("proxy", "Proxy vs gold reward", "runs that optimised a learned reward model: solid gold, dashed proxy"),
)


def build_figures(runs: list[RunData], x: str = "step", smoothing: float = 0.0) -> list[dict]:
    """Every chart of the comparison page as {id, title, note, figure}; charts without data are left out.
    The reward and KL curves, loss and panels follow the x axis (`step`, `tokens`, `wall`) and the EMA
    `smoothing`; the frontier shows the evaluations as logged."""
    axis = _Axis(x, runs)
    weight = min(max(float(smoothing), 0.0), 0.99)
    out = []
    notes = {cid: (title, note) for cid, title, note in CHARTS}
    missing_x = [r.label for r in runs if not axis.has(r)]
    for cid, fig in (("reward", reward_figure(runs, axis, weight)), ("kl", kl_figure(runs, axis, weight)),
                     ("frontier", frontier_figure(runs)), ("proxy", proxy_figure(runs, axis, weight))):
        if fig is not None and (cid in ("reward", "kl", "frontier") or fig["data"]):
            title, note = notes[cid]
            out.append({"id": cid, "title": title, "note": note, "figure": fig, "wide": cid in WIDE})
    for panel in PANELS:
        fig = panel_figure(runs, panel, axis, weight)
        if fig is not None:
            out.append({"id": panel.id, "title": panel.title, "note": " / ".join(panel.keys), "figure": fig,
                        "wide": False})
    for item in out:
        if not item["figure"]["data"]:
            item["figure"]["layout"]["annotations"] = [{
                "text": "No evaluations yet", "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5,
                "y": 0.5, "font": {"size": 14, "color": "#98a2b3"}}]
    if missing_x:
        for item in out:
            if item["id"] != "frontier":
                item["missing_x"] = missing_x
    return out
