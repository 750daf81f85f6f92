"""Metric series: the names the charts read, downsampling that keeps every series' first, last, minimum
and maximum (min/max bucketing, "M4"), and linear interpolation. Plain lists in, plain lists out."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_POINTS = 500  # per trace: 4 points (first, last, min, max) per bucket of steps
MAX_BUCKETS = MAX_POINTS // 4

Point = tuple[int, float, float]  # (step, value, wall time: seconds since the epoch)

# --- metric names -------------------------------------------------------------------------------------

REWARD, KL, PROXY, TOKENS = "eval/reward", "eval/kl", "eval/proxy_reward", "train/num_tokens"
ENTROPY, LENGTH = "eval/entropy", "eval/length"
LOSS_KEYS = ("train/loss", "train/loss/total")  # PPO (ours) logs its total loss as loss/total


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
# A run's own page also draws its learning rate (TRL logs learning_rate, our PPO lr); not a comparison chart.
LR_PANEL = Panel("learning_rate", "Learning rate", ("train/learning_rate", "train/lr"), "learning rate")
NEEDED_NAMES = tuple(dict.fromkeys((REWARD, KL, PROXY, TOKENS, ENTROPY, LENGTH, *(k for p in PANELS for k in p.keys),
                                    *LR_PANEL.keys)))

# --- downsampling -------------------------------------------------------------------------------------


class Bucket:
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

    def merge(self, other: Bucket) -> None:
        if other.first[0] < self.first[0]:
            self.first = other.first
        if other.last[0] >= self.last[0]:
            self.last = other.last
        # Ties go to the earlier step, so the result does not depend on the order points arrive in.
        lo, hi = other.lo, other.hi
        if lo[1] < self.lo[1] or (lo[1] == self.lo[1] and lo[0] < self.lo[0]):
            self.lo = lo
        if hi[1] > self.hi[1] or (hi[1] == self.hi[1] and hi[0] < self.hi[0]):
            self.hi = hi
        self.total += other.total
        self.count += other.count


class Series:
    """One metric series, downsampled as its points arrive: the first, last, minimum and maximum point
    of each bucket of steps.

    Buckets are `width` steps wide, `width` a power of two. When there are more than `max_buckets`,
    the width doubles and neighbouring buckets merge; merging is exact, so the result is the same as
    bucketing everything at once. At most 4 * max_buckets points are kept, and the series' own first,
    last, minimum and maximum point are always among them. Points may arrive in any order. Missing
    values (NaN, infinity, NULL) are counted, not kept."""

    def __init__(self, max_buckets: int = MAX_BUCKETS):
        self.max_buckets = max(1, max_buckets)
        self.width = 1
        self.buckets: dict[int, Bucket] = {}
        self.missing = 0

    def add(self, step: int, value: float | None, wall: float = 0.0) -> None:
        if value is None or not math.isfinite(value):
            self.missing += 1
            return
        p = (step, value, wall)
        key = step // self.width
        bucket = self.buckets.get(key)
        if bucket is None:
            self.buckets[key] = Bucket(p)
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
            merged: dict[int, Bucket] = {}
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


def summarize(rows: Iterable[tuple[int, str, float | None, float]],
              names: Iterable[str] = NEEDED_NAMES) -> dict[str, SeriesData]:
    """The downsampled series of the `names` among rows (step, name, value, wall), in any order."""
    wanted = set(names)
    series: dict[str, Series] = {}
    for step, name, value, wall in rows:
        if name in wanted:
            s = series.get(name)
            if s is None:
                s = series[name] = Series()
            s.add(step, value, wall)
    return {name: s.snapshot() for name, s in series.items()}


# --- interpolation ------------------------------------------------------------------------------------


def interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """Linear interpolation in sorted `xs`; exact at a knot, None outside [xs[0], xs[-1]]."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    i = bisect_left(xs, x)
    if xs[i] == x:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def interp_many(xs: Sequence[float], ys: Sequence[float], grid: Sequence[float]) -> list[float]:
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


def thin(xs: list, n: int) -> list:
    """At most `n` of `xs`, evenly spread, the first and the last kept."""
    if len(xs) <= n:
        return xs
    last = len(xs) - 1
    return [xs[round(i * last / (n - 1))] for i in range(n)]
