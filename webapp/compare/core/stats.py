"""The comparison's statistics on plain lists: EMA smoothing, means with 95% t intervals, seed bands,
Pareto fronts of (KL, reward) points, reward gained per nat of KL, and how numbers are shown."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from webapp.compare.core.series import MAX_POINTS, SeriesData, interp_many, thin

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


# --- intervals ----------------------------------------------------------------------------------------

# Two-sided 95% critical values of Student's t, df = 1..30 (beyond, a Cornish-Fisher expansion).
T975 = (12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
        2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
        2.131449546, 2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
        2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
        2.045229642, 2.042272456)
Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (half-width factor of a 95% CI)."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def fmt(x: float | None, digits: int = 3) -> str:
    """A number as the tables show it ("–" for none; thousands separated; tiny values in two digits)."""
    if x is None:
        return "–"
    if x != 0 and abs(x) >= 1e6:
        return f"{x:.3g}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.2g}"
    return f"{x:.{digits}f}"


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
        shown = fmt(self.mean, digits)
        return shown if self.half is None else f"{shown} ± {fmt(self.half, digits)}"


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
    grid = thin(grid, max_points)
    n = len(curves)
    factor = t975(n - 1) / math.sqrt(n)
    columns = [interp_many(xs, ys, grid) for xs, ys in curves]
    mean, lo, hi = [], [], []
    for values in zip(*columns, strict=True):
        m = math.fsum(values) / n
        half = factor * math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))
        mean.append(m)
        lo.append(m - half)
        hi.append(m + half)
    return Band(grid, mean, lo, hi, n)


# --- frontier -----------------------------------------------------------------------------------------


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
