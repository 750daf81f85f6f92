"""Over-optimisation on synthetic curves with known truth: the Gao et al. fits recover their
parameters, the gold/proxy parting is found where it is and not where it is not, entropy collapse is
flagged, and the fit figure is valid plotly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from webapp.compare.core import overopt
from webapp.compare.core.figures import as_go, build_figures
from webapp.compare.core.figures.gao import gao_figure, gao_info
from webapp.compare.core.series import ENTROPY, KL, LENGTH, PROXY, REWARD, SeriesData
from webapp.compare.core.view import RunData


@pytest.mark.parametrize(("form", "alpha", "beta"), [("rl", 0.9, 0.35), ("bon", 0.6, 0.12)])
def test_gao_fits_recover_known_parameters(form, alpha, beta):
    rng = np.random.default_rng(0)
    d = np.linspace(0.05, 4.0, 60)
    truth = overopt.GaoFit(form, alpha, beta, 0.0, 0)
    gain = np.array([truth(x) for x in d]) + rng.normal(0, 0.01, d.size)
    fit = overopt.fit_gao(d.tolist(), gain.tolist(), form)
    assert fit.alpha == pytest.approx(alpha, abs=0.02) and fit.beta == pytest.approx(beta, abs=0.02)
    assert fit.rmse < 0.02 and fit.n == 60
    exact = overopt.fit_gao(d.tolist(), [truth(x) for x in d], form)
    assert exact.alpha == pytest.approx(alpha, abs=1e-9) and exact.beta == pytest.approx(beta, abs=1e-9)
    # The peak of the fitted curve: d(alpha - beta log d) peaks at exp(alpha/beta - 1); d(alpha - beta d) at alpha/2beta.
    peak = math.exp(alpha / beta - 1) if form == "rl" else alpha / (2 * beta)
    assert exact.peak == pytest.approx(peak)


def test_a_fit_needs_three_points_and_a_known_form():
    assert overopt.fit_gao([0.0, 1.0, 2.0], [0.0, 0.1, 0.2]) is None
    with pytest.raises(ValueError):
        overopt.fit_gao([1, 2, 3], [1, 2, 3], "ppo")


def curves(peak_at: float | None, steps=21, noise=0.005, seed=0):
    """Gold rising then (from `peak_at`, a share of the run) falling; the proxy rising throughout."""
    rng = np.random.default_rng(seed)
    gold, proxy = [], []
    for i in range(steps):
        t = i / (steps - 1)
        g = 0.2 + 0.5 * min(t, peak_at if peak_at is not None else 1)
        if peak_at is not None and t > peak_at:
            g -= 0.8 * (t - peak_at)
        gold.append((i * 10, g + rng.normal(0, noise)))
        proxy.append((i * 10, 0.2 + 0.9 * t + rng.normal(0, noise)))
    return gold, proxy


def test_the_parting_is_found_near_where_the_gold_reward_turns():
    gold, proxy = curves(0.5)
    p = overopt.parting(gold, proxy)
    assert p is not None and abs(p.step - 100) <= 20
    assert p.gold_drop > 0.1 and p.proxy_rise > 0.2 and p.last_step == 200


def test_no_parting_while_gold_rises_or_when_both_fall():
    gold, proxy = curves(None)
    assert overopt.parting(gold, proxy) is None
    gold, _ = curves(0.5)
    falling = [(s, -v) for s, v in curves(None)[1]]  # proxy falling with gold: not over-optimisation
    assert overopt.parting(gold, falling) is None
    assert overopt.parting(gold[:3], proxy[:3]) is None  # too few evaluations


def test_noise_alone_is_not_a_parting():
    flat_gold = [(i * 10, 0.5 + v) for i, v in enumerate(np.random.default_rng(3).normal(0, 0.02, 21))]
    _, proxy = curves(None)
    assert overopt.parting(flat_gold, proxy) is None


def series(points):
    return SeriesData(points=[(s, v, 0.0) for s, v in points], means=[])


def run(i, method, gold, proxy=None, kl=None, entropy=None, length=None):
    data = {REWARD: series(gold)}
    if proxy:
        data[PROXY] = series(proxy)
    if kl:
        data[KL] = series(kl)
    if entropy:
        data[ENTROPY] = series(entropy)
    if length:
        data[LENGTH] = series(length)
    return RunData(id=i, label=f"{method.upper()} seed 0", group=method, group_label=method.upper(), method=method,
                   series=data)


def test_flags_name_the_run_the_step_and_entropy_collapse():
    gold, proxy = curves(0.5)
    flagged = run(1, "ppo", gold, proxy, entropy=[(0, 2.0), (200, 0.3)])
    text = overopt.flags(flagged)
    step = overopt.parting(gold, proxy).step
    assert len(text) == 2 and "over-optimisation" in text[0] and f"stopped rising at step {step} " in text[0]
    assert "entropy collapse" in text[1]
    assert overopt.flags(run(2, "dpo", gold, entropy=[(0, 2.0), (200, 1.5)])) == []


def test_the_gao_figure_draws_points_and_fits_per_method():
    d = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    fit = overopt.GaoFit("rl", 0.5, 0.3, 0, 0)
    steps = [0, 10, 20, 30, 40, 50]
    r = run(1, "ppo", [(s, 0.2 + fit(x)) for s, x in zip(steps, d, strict=True)],
            kl=[(s, x * x) for s, x in zip(steps, d, strict=True)])
    (info,) = gao_info([r])
    assert info["fit"].alpha == pytest.approx(0.5) and info["fit"].beta == pytest.approx(0.3)
    assert info["points"][0] == (0.0, 0.0, 0)
    fig = gao_figure([r])
    as_go(fig)
    assert [t["meta"]["kind"] for t in fig["data"]] == ["gao-points", "gao-fit"]
    assert "gao" in [c["id"] for c in build_figures([r])]
    assert gao_figure([run(2, "dpo", [(10, 0.3)])]) is None  # no step 0: no gain, no fit


def test_length_drift_is_flagged_both_ways():
    gold, _ = curves(None)
    assert "length drift" in overopt.flags(run(1, "ppo", gold, length=[(0, 12.0), (200, 30.0)]))[0]
    assert "length drift" in overopt.flags(run(1, "ppo", gold, length=[(0, 12.0), (200, 5.0)]))[0]
    assert overopt.flags(run(1, "ppo", gold, length=[(0, 12.0), (200, 16.0)])) == []
