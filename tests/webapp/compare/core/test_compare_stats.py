"""EMA, confidence intervals and bands (against hand-computed t values), Pareto fronts and reward per
nat, on plain lists."""

import math
import random

import pytest

from webapp.compare.core.series import Series
from webapp.compare.core.stats import ema, mean_band, mean_ci, pareto_front, reward_per_nat, smoothed, t975

# --- smoothing ----------------------------------------------------------------------------------------


def test_ema_hand_values():
    # last = 0.5 * last + 0.5 * x, then divided by (1 - 0.5**k): 1, 1.25/0.75, 2.125/0.875
    assert ema([1, 2, 3], 0.5) == pytest.approx([1.0, 5 / 3, 17 / 7])
    assert ema([4, 5, 6], 0.0) == [4, 5, 6]
    assert ema([], 0.9) == []
    assert ema([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)  # debiased: a constant stays constant


def test_ema_of_bucket_means_weighs_them_by_count():
    # A bucket of two equal points smooths as the two points would.
    assert ema([1, 3], 0.6, counts=[1, 2])[-1] == pytest.approx(ema([1, 3, 3], 0.6)[-1])


@pytest.mark.parametrize("weight", [-0.1, 1.0, 1.5])
def test_ema_weight_must_be_below_one(weight):
    with pytest.raises(ValueError):
        ema([1.0], weight)


def test_smoothed_uses_exact_points_unsmoothed_and_means_smoothed():
    data = Series().extend([(0, 1.0, 10.0), (1, 3.0, 11.0), (2, 5.0, 12.0)]).snapshot()
    assert smoothed(data, 0) == ([0, 1, 2], [1.0, 3.0, 5.0], [1.0, 3.0, 5.0], [10.0, 11.0, 12.0])
    steps, shown, raw, walls = smoothed(data, 0.5)
    assert steps == [0, 1, 2] and raw == [1.0, 3.0, 5.0] and shown == pytest.approx(ema(raw, 0.5))


# --- confidence intervals -----------------------------------------------------------------------------


def test_t_quantiles_against_table_values():
    # Student's t, 97.5% quantile (any statistics table).
    for df, value in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423), (40, 2.0211),
                      (60, 2.0003), (120, 1.9799), (1000, 1.9623)]:
        assert t975(df) == pytest.approx(value, abs=2e-4), df
    with pytest.raises(ValueError):
        t975(0)


def test_mean_ci_by_hand():
    # [1, 2, 3]: mean 2, sample sd 1, half-width t(2) * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    est = mean_ci([1, 2, 3])
    assert (est.mean, est.n) == (2, 3)
    assert est.half == pytest.approx(2.484138, abs=1e-6)
    assert (est.lo, est.hi) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    # [2, 4]: mean 3, sd sqrt(2), half-width t(1) * sqrt(2) / sqrt(2) = 12.706205
    assert mean_ci([2, 4]).half == pytest.approx(12.706205, abs=1e-6)
    # five seeds: 0.50 0.52 0.55 0.47 0.51 -> mean 0.51, sd 0.0291548, t(4) = 2.776445: 0.0362007
    five = mean_ci([0.50, 0.52, 0.55, 0.47, 0.51])
    assert five.mean == pytest.approx(0.51) and five.half == pytest.approx(0.0362007, abs=1e-6)
    assert five.text(3) == "0.510 ± 0.036"


def test_mean_ci_of_too_few_values():
    assert mean_ci([0.7]) == mean_ci([0.7, None, math.nan])
    assert mean_ci([0.7]).half is None and mean_ci([0.7]).text(2) == "0.70"
    assert mean_ci([]).mean is None and mean_ci([]).text() == "–"


def test_mean_band_by_hand():
    band = mean_band([([0, 10, 20], [1, 2, 3]), ([0, 10, 20], [3, 4, 5]), ([0, 10, 20], [2, 3, 4])])
    half = 4.302652730 / math.sqrt(3)  # sd 1 at every step
    assert band.steps == [0, 10, 20] and band.n == 3
    assert band.mean == pytest.approx([2, 3, 4])
    assert band.lo == pytest.approx([2 - half, 3 - half, 4 - half])
    assert band.hi == pytest.approx([2 + half, 3 + half, 4 + half])


def test_mean_band_covers_only_the_steps_all_seeds_reached_and_interpolates():
    finished = ([0, 10, 20, 30], [0.0, 10.0, 20.0, 30.0])
    running = ([0, 5, 10, 15], [0.0, 0.0, 0.0, 0.0])  # a seed still training
    band = mean_band([finished, running])
    assert band.steps == [0, 5, 10, 15]
    assert band.mean == pytest.approx([0, 2.5, 5, 7.5])  # the finished seed interpolated at 5 and 15
    assert mean_band([finished]) is None
    assert mean_band([([0, 1], [1, 1]), ([5, 6], [1, 1])]) is None  # no common steps


def test_mean_band_thins_its_grid():
    curves = [(list(range(2000)), [float(i)] * 2000) for i in range(3)]
    band = mean_band(curves, max_points=100)
    assert len(band.steps) == 100 and band.steps[0] == 0 and band.steps[-1] == 1999


# --- Pareto front and reward per nat ------------------------------------------------------------------


def test_pareto_front():
    points = [(0.0, 0.0), (1.0, 0.5), (2.0, 0.4), (3.0, 0.9), (1.0, 0.2), (0.5, 0.5), (4.0, 0.9)]
    # (1.0, 0.5) is beaten by (0.5, 0.5): same reward for less KL; (4.0, 0.9) by (3.0, 0.9).
    assert pareto_front(points) == [(0.0, 0.0), (0.5, 0.5), (3.0, 0.9)]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.3, "step 20"), (0.5, 0.6, "step 40")]) == [(0.5, 0.6, "step 40")]


def test_pareto_front_is_monotone_and_undominated():
    rng = random.Random(7)
    points = [(rng.random() * 5, rng.random()) for _ in range(300)]
    front = pareto_front(points)
    assert [p[0] for p in front] == sorted(p[0] for p in front)
    assert [p[1] for p in front] == sorted(p[1] for p in front)
    for kl, reward in front:
        assert not any(k <= kl and r >= reward and (k, r) != (kl, reward) for k, r in points)
    for kl, reward in points:
        if (kl, reward) not in front:
            assert any(k <= kl and r >= reward for k, r in front)


def test_reward_per_nat():
    assert reward_per_nat(0.2, 0.5, 1.5) == pytest.approx(0.2)
    assert reward_per_nat(0.5, 0.2, 3.0) == pytest.approx(-0.1)  # a run that got worse
    assert reward_per_nat(0.2, 0.5, 0.0) is None  # no KL spent (step 0, SFT on its own data...)
    assert reward_per_nat(0.2, 0.5, -0.01) is None  # a negative Monte-Carlo estimate
    assert reward_per_nat(None, 0.5, 1.0) is None
