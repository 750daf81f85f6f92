"""Downsampling (min/max bucketing) and interpolation, on plain lists."""

import math
import random

import pytest

from webapp.compare.core.series import Series, downsample, interp

# --- downsampling -------------------------------------------------------------------------------------


def random_walk(n: int, seed: int = 0) -> list[tuple[int, float, float]]:
    rng = random.Random(seed)
    value, out = 0.0, []
    for step in range(n):
        value += rng.gauss(0, 1)
        out.append((step, value, 1000.0 + step))
    return out


@pytest.mark.parametrize("n", [10_000, 5_001, 777])
def test_downsampling_keeps_first_last_min_and_max(n):
    points = random_walk(n, seed=n)
    kept = downsample(points, max_points=500)
    assert len(kept) <= 500
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert min(points, key=lambda p: p[1]) in kept
    assert max(points, key=lambda p: p[1]) in kept
    assert set(kept) <= set(points)  # real points, not averages
    assert [p[0] for p in kept] == sorted({p[0] for p in kept})  # by step, once each


def test_downsampling_keeps_every_bucket_extreme():
    """Min/max bucketing: a spike anywhere survives, however short."""
    points = [(s, 0.0, 0.0) for s in range(5000)]
    points[3217] = (3217, 50.0, 0.0)
    points[1234] = (1234, -7.0, 0.0)
    kept = downsample(points, max_points=200)
    assert (3217, 50.0, 0.0) in kept and (1234, -7.0, 0.0) in kept and len(kept) <= 200


def test_short_series_are_kept_whole():
    points = random_walk(120)
    assert downsample(points, max_points=500) == points


def test_incremental_downsampling_matches_all_at_once_in_any_order():
    points = random_walk(3000, seed=3)
    at_once = Series(50).extend(points).snapshot()
    shuffled = points[:]
    random.Random(1).shuffle(shuffled)
    in_pieces = Series(50)
    for chunk in (shuffled[:700], shuffled[700:701], shuffled[701:]):
        in_pieces.extend(chunk)
    got = in_pieces.snapshot()
    assert got.points == at_once.points
    assert [m[0] for m in got.means] == [m[0] for m in at_once.means]  # same buckets
    assert [m[1] for m in got.means] == pytest.approx([m[1] for m in at_once.means])  # sums in another order
    assert len(in_pieces) == 3000


def test_bucket_means_cover_every_point():
    points = random_walk(2000, seed=5)
    data = Series(25).extend(points).snapshot()
    assert sum(m[2] for m in data.means) == 2000
    total = sum(m[1] * m[2] for m in data.means)
    assert total == pytest.approx(sum(p[1] for p in points))
    assert [m[0] for m in data.means] == sorted(m[0] for m in data.means)


def test_missing_values_are_counted_not_kept():
    s = Series()
    for step, value in enumerate([1.0, None, math.nan, math.inf, 2.0]):
        s.add(step, value, 0.0)
    assert s.missing == 3
    assert [p[:2] for p in s.snapshot().points] == [(0, 1.0), (4, 2.0)]


def test_interp():
    assert interp([0, 10], [0.0, 1.0], 5) == 0.5
    assert interp([0, 10], [0.0, 1.0], 10) == 1.0
    assert interp([0, 10], [0.0, 1.0], 11) is None and interp([], [], 0) is None
