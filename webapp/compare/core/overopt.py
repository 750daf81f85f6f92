"""Over-optimisation: where a run's gold reward stops rising while the reward it was trained on (the
proxy, `eval/proxy_reward`) keeps rising; the gold reward's fit against d = sqrt(KL) with the forms
of Gao, Schulman & Hilton (2022, "Scaling laws for reward model overoptimization"): RL
R(d) = d (alpha - beta log d), best-of-N R(d) = d (alpha - beta d), R the gain over the start; and
entropy collapse. Entropy collapse and completion-length drift are flagged too. Plain lists in, plain data out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from webapp.compare.core.series import ENTROPY, KL, LENGTH, PROXY, REWARD, interp
from webapp.compare.core.stats import fmt
from webapp.compare.core.view import RunData, groups_of

WINDOW = 3  # evaluations in the moving average the detection reads
MIN_EVALS = 4
COLLAPSE = 0.3  # entropy below this share of its value at the first evaluation: collapse
DRIFT = 2.0  # mean completion length grown or shrunk by this factor since the first evaluation: drift


def moving_average(values: Sequence[float], window: int = WINDOW) -> list[float]:
    """Centred moving average; the window shrinks at the ends."""
    half = window // 2
    n = len(values)
    return [sum(values[max(0, i - half):min(n, i + half + 1)]) / (min(n, i + half + 1) - max(0, i - half))
            for i in range(n)]


@dataclass(frozen=True)
class Parting:
    """Gold reward peaked at `step` (smoothed) and fell by `gold_drop` by the last evaluation while the
    proxy rose by `proxy_rise` over the same stretch."""

    step: int
    last_step: int
    gold_peak: float
    gold_end: float
    proxy_at_peak: float
    proxy_end: float

    @property
    def gold_drop(self) -> float:
        return self.gold_peak - self.gold_end

    @property
    def proxy_rise(self) -> float:
        return self.proxy_end - self.proxy_at_peak


def parting(gold: Sequence[tuple[int, float]], proxy: Sequence[tuple[int, float]],
            window: int = WINDOW) -> Parting | None:
    """Where the gold reward stops rising while the proxy still rises, from (step, value) evaluations;
    None if it does not happen (or there are fewer than MIN_EVALS shared evaluations).

    Both curves are smoothed by a centred moving average of `window` evaluations. The gold curve's
    peak is the step; it counts when, from the peak to the last evaluation, the gold reward falls and
    the proxy rises by more than a tolerance: twice the noise of the smoothed gold curve (the SD of the
    raw values around it, over sqrt(window)), and at least 2% of the gold curve's range."""
    proxy_at = dict(proxy)
    shared = [(s, g, proxy_at[s]) for s, g in sorted(gold) if s in proxy_at]
    if len(shared) < MIN_EVALS:
        return None
    steps = [s for s, _, _ in shared]
    g = moving_average([v for _, v, _ in shared], window)
    q = moving_average([v for _, _, v in shared], window)
    raw = [v for _, v, _ in shared]
    noise = math.sqrt(sum((a - b) ** 2 for a, b in zip(raw, g, strict=True)) / max(1, len(raw) - 1))
    tol = max(2 * noise / math.sqrt(window), 0.02 * (max(raw) - min(raw)), 1e-9)
    peak = max(range(len(g)), key=lambda i: (g[i], -i))
    if peak == len(g) - 1:
        return None
    if g[peak] - g[-1] > tol and q[-1] - q[peak] > tol:
        return Parting(step=steps[peak], last_step=steps[-1], gold_peak=g[peak], gold_end=g[-1],
                       proxy_at_peak=q[peak], proxy_end=q[-1])
    return None


# --- Gao et al. (2022) fits ---------------------------------------------------------------------------

FORMS = {"rl": "d (α − β log d)", "bon": "d (α − β d)"}


@dataclass(frozen=True)
class GaoFit:
    form: str  # "rl" or "bon"
    alpha: float
    beta: float
    rmse: float
    n: int

    def __call__(self, d: float) -> float:
        if d <= 0:
            return 0.0
        return d * (self.alpha - self.beta * (math.log(d) if self.form == "rl" else d))

    @property
    def peak(self) -> float | None:
        """d at which the fitted gold gain is largest (None if it never turns down)."""
        if self.beta <= 0:
            return None
        return math.exp(self.alpha / self.beta - 1) if self.form == "rl" else self.alpha / (2 * self.beta)


def fit_gao(d: Sequence[float], gain: Sequence[float], form: str = "rl") -> GaoFit | None:
    """Least-squares alpha and beta of the gold gain against d = sqrt(KL) (both forms are linear in
    them). None with fewer than 3 points of d > 0."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {sorted(FORMS)}, not {form!r}")
    pts = [(x, y) for x, y in zip(d, gain, strict=True) if x > 0 and math.isfinite(x) and math.isfinite(y)]
    if len(pts) < 3:
        return None
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    design = np.column_stack([x, -(x * np.log(x) if form == "rl" else x * x)])
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    rmse = float(np.sqrt(np.mean((design @ np.array([alpha, beta]) - y) ** 2)))
    return GaoFit(form=form, alpha=float(alpha), beta=float(beta), rmse=rmse, n=len(pts))


def gold_vs_sqrt_kl(run: RunData) -> list[tuple[float, float, int]]:
    """(sqrt KL, gold gain over the run's step-0 reward, step) of each of its evaluations; empty if the
    run has no step-0 evaluation (its start is unknown)."""
    reward, kl = run.series.get(REWARD), run.series.get(KL)
    if not reward or not kl or reward.first[0] != 0:
        return []
    start = reward.first[1]
    steps, values = [p[0] for p in kl.points], [p[1] for p in kl.points]
    out = []
    for step, r, _ in reward.points:
        k = interp(steps, values, step)
        if k is not None:
            out.append((math.sqrt(max(k, 0.0)), r - start, step))
    return out


def group_fits(runs: list[RunData]) -> list[dict]:
    """Per group (method): its points and its RL-form fit (best-of-N runs: the best-of-N form)."""
    out = []
    for group, members in groups_of(runs).items():
        pts = [p for run in members for p in gold_vs_sqrt_kl(run)]
        form = "bon" if members[0].method == "best_of_n" else "rl"
        fit = fit_gao([p[0] for p in pts], [p[1] for p in pts], form)
        if pts:
            out.append({"group": group, "label": members[0].group_label, "method": members[0].method,
                        "points": pts, "fit": fit})
    return out


# --- flags --------------------------------------------------------------------------------------------


def flags(run: RunData) -> list[str]:
    """What the run and compare pages say about a run: gold and proxy parting, entropy collapse, length drift."""
    out = []
    gold, proxy = run.series.get(REWARD), run.series.get(PROXY)
    if gold and proxy:
        p = parting([(s, v) for s, v, _ in gold.points], [(s, v) for s, v, _ in proxy.points])
        if p is not None:
            out.append(f"{run.label}: over-optimisation — the gold reward stopped rising at step {p.step} while the "
                       f"training reward kept rising (gold {fmt(p.gold_peak)} → {fmt(p.gold_end)}, training reward "
                       f"{fmt(p.proxy_at_peak)} → {fmt(p.proxy_end)} by step {p.last_step}).")
    entropy = run.series.get(ENTROPY)
    if entropy and len(entropy.points) >= 2:
        first, last = entropy.points[0], entropy.points[-1]
        if first[1] > 0 and last[1] < COLLAPSE * first[1]:
            out.append(f"{run.label}: entropy collapse — the policy's per-token entropy fell from {fmt(first[1])} "
                       f"to {fmt(last[1])} nats (step {first[0]} → {last[0]}): its samples are close to deterministic.")
    length = run.series.get(LENGTH)
    if length and len(length.points) >= 2:
        first, last = length.points[0], length.points[-1]
        if first[1] > 0 and last[1] > 0 and max(last[1] / first[1], first[1] / last[1]) >= DRIFT:
            out.append(f"{run.label}: length drift — mean completion length went from {fmt(first[1], 1)} to "
                       f"{fmt(last[1], 1)} tokens (step {first[0]} → {last[0]}).")
    return out


def all_flags(runs: list[RunData]) -> list[str]:
    return [f for run in runs for f in flags(run)]
