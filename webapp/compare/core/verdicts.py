"""Verdicts: methods compared pairwise on the same eval prompts at their final evaluation (paired
bootstrap over prompts, and over seeds when a method has several; Holm correction across pairs), the
smallest difference each comparison can detect, and the prompts, samples and seeds that would detect a
given one. Plain data in (per-sample rewards), plain data out; numpy only.

The design is crossed: every run (a method's seed) answers the same prompts. A method's per-prompt
mean reward y[s, p] (seed s, prompt p, mean over its K samples) is modelled as
mu + u[p] + v[s] + e[s, p]: u the prompt's effect (its difference between two methods does not shrink
with more samples or seeds), v the seed's (training luck), e the rest (sampling noise over K samples
and the seed x prompt interaction). The difference of two methods' grand means then has variance

    var_p(d) / P  +  sv_a^2 / S_a  +  sv_b^2 / S_b

with d[p] the difference of the seed-averaged per-prompt means (it carries u and e) and sv^2 the seed
variance net of the e it contains (var of seed means - var(e) / P, at least 0). The bootstrap resamples
prompts (one draw shared by both methods: the pairing); the seeds' part is drawn from a normal of the
net seed variance (a parametric bootstrap: two or three seeds are too few to resample, and resampling
seed means as well as prompts would count e twice). Deviations are scaled for small samples
(P / (P - 1), and Student's t over normal at the Welch-Satterthwaite degrees of freedom). Coverage of
the 95% interval, measured in tests/webapp/compare/core/test_compare_verdicts.py: 94-95% with one seed
or with several seeds whose variance is moderate; about 92% with two seeds whose variance dominates.
With one seed per method the seed variance is unknown: a verdict is about these runs, and says so.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from webapp.compare.core.stats import Z975, fmt, t975

ALPHA = 0.05
POWER = 0.80
Z_POWER = NormalDist().inv_cdf(POWER)  # 0.8416
ROUNDS = 2000  # bootstrap replicates (p-values down to 1 / 2001: enough for Holm over 45 pairs)
SEED = 20221015  # fixed: the same data give the same intervals, byte for byte

# Defaults for planning before any data (the new-experiment form): per-sample reward SD, SD across
# prompts of two methods' difference, SD across seeds of a method's mean reward. Rewards in [0, 1];
# orders of magnitude measured on the prefilled example (issue 17: one evaluation of 20 prompts x 8
# samples has a standard error of about 0.03, seeds of one method differ by 0.02-0.06).
DEFAULT_SAMPLE_SD = 0.30
DEFAULT_PROMPT_SD = 0.10
DEFAULT_SEED_SD = 0.03


@dataclass(frozen=True)
class MethodRewards:
    """One method's (group's) rewards at its runs' final evaluation: `y[s, p]` the mean reward of seed
    s on prompt p, `within` the pooled variance of a prompt's samples around their mean (None when each
    prompt has one sample), `k` samples per prompt, `steps` each run's evaluation step."""

    group: str
    label: str
    prompts: tuple  # prompt keys, sorted
    y: np.ndarray  # (seeds, prompts)
    within: float | None
    k: int
    runs: tuple[str, ...] = ()
    steps: tuple[int, ...] = ()

    @property
    def seeds(self) -> int:
        return self.y.shape[0]

    @property
    def position(self) -> dict:
        return {p: i for i, p in enumerate(self.prompts)}


def method_rewards(groups: dict[str, tuple[str, list[tuple[str, int, Iterable[tuple]]]]]) -> list[MethodRewards]:
    """MethodRewards of each group from {group: (label, [(run label, step, [(prompt key, reward), ...]), ...])}.
    Only the prompts every run of the group answered are kept; a run with none is left out."""
    out = []
    for group, (label, runs) in groups.items():
        per_run = []
        for run_label, step, rows in runs:
            by_prompt: dict = {}
            for key, reward in rows:
                if reward is not None and math.isfinite(reward):
                    by_prompt.setdefault(key, []).append(float(reward))
            if by_prompt:
                per_run.append((run_label, step, by_prompt))
        if not per_run:
            continue
        common = set(per_run[0][2])
        for _, _, by_prompt in per_run[1:]:
            common &= set(by_prompt)
        prompts = tuple(sorted(common))
        if not prompts:
            continue
        y = np.array([[np.mean(bp[p]) for p in prompts] for _, _, bp in per_run])
        ss, dof, ks = 0.0, 0, []
        for _, _, bp in per_run:
            for p in prompts:
                xs = bp[p]
                ks.append(len(xs))
                if len(xs) > 1:
                    ss += float(np.var(xs, ddof=1)) * (len(xs) - 1)
                    dof += len(xs) - 1
        out.append(MethodRewards(group=group, label=label, prompts=prompts, y=y, within=ss / dof if dof else None,
                                 k=max(1, round(sum(ks) / len(ks))), runs=tuple(r[0] for r in per_run),
                                 steps=tuple(r[1] for r in per_run)))
    return out


# --- one pair -----------------------------------------------------------------------------------------


def seed_variance(y: np.ndarray) -> tuple[float, np.ndarray]:
    """(net seed variance, seed effects shrunk to it) of a (seeds, prompts) table: 0 and zeros for one seed."""
    s, p = y.shape
    if s < 2:
        return 0.0, np.zeros(s)
    row = y.mean(axis=1)
    effects = row - row.mean()
    raw = float(effects.var(ddof=1))
    if p > 1:
        resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
        noise = float((resid ** 2).sum()) / ((s - 1) * (p - 1))
    else:
        noise = 0.0
    net = max(0.0, raw - noise / p)
    # Shrunk so that resampling S of them has the variance net / S (the S / (S - 1) undoes the plug-in bias).
    scale = math.sqrt(net / raw * s / (s - 1)) if raw > 0 else 0.0
    return net, effects * scale


def satterthwaite(parts: Sequence[tuple[float, int]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of variances (variance, its degrees of freedom)."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    return total * total / denom if denom > 0 else math.inf


def quantile_t(df: float) -> float:
    """t975 at a fractional `df` (at least 1), linear in 1/df between whole degrees of freedom."""
    if not math.isfinite(df) or df > 1e6:
        return Z975
    df = max(1.0, df)
    lo = math.floor(df)
    if lo == df:
        return t975(lo)
    w = (1 / lo - 1 / df) / (1 / lo - 1 / (lo + 1))
    return t975(lo) + w * (t975(lo + 1) - t975(lo))


@dataclass
class Pair:
    """Method `a` minus method `b` (a the better on the estimate)."""

    a: str
    b: str
    a_label: str
    b_label: str
    diff: float
    lo: float
    hi: float
    se: float
    p: float
    p_holm: float = 1.0
    significant: bool = False
    mde: float = math.inf  # smallest difference detected with 80% power at alpha 0.05
    prompts: int = 0
    seeds_a: int = 1
    seeds_b: int = 1
    k: int = 1
    components: dict = field(default_factory=dict)  # prompt, sample, seed_a, seed_b variances (planning)
    sentence: str = ""
    note: str = ""

    @property
    def underpowered(self) -> bool:
        return abs(self.diff) < self.mde

    def plan(self, delta: float, *, prompts: int | None = None, k: int | None = None,
             seeds: int | None = None) -> dict:
        """What would detect `delta` with 80% power (alpha 0.05), changing one of prompts, samples per
        prompt or seeds (both methods) at a time, the others as now. None: no number of it would."""
        return plan(self.components, delta, prompts=prompts or self.prompts, k=k or self.k,
                    seeds=seeds or min(self.seeds_a, self.seeds_b))

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "a_label": self.a_label, "b_label": self.b_label,
                "difference": r(self.diff), "low": r(self.lo), "high": r(self.hi), "se": r(self.se),
                "p": r(self.p), "p_holm": r(self.p_holm), "significant": self.significant,
                "detectable": r(self.mde) if math.isfinite(self.mde) else None, "underpowered": self.underpowered,
                "prompts": self.prompts, "seeds": [self.seeds_a, self.seeds_b], "samples_per_prompt": self.k,
                "sentence": self.sentence, "note": self.note,
                "to_detect": self.plan(self.diff) if not self.significant and self.diff > 0 else None}


def r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(format(x, ".6g"))


def compare_pair(a: MethodRewards, b: MethodRewards, rng: np.random.Generator, rounds: int = ROUNDS) -> Pair | None:
    """The paired comparison of two methods on the prompts both answered; None if fewer than 2."""
    common = sorted(set(a.prompts) & set(b.prompts))
    if len(common) < 2:
        return None
    ia = [a.position[p] for p in common] if len(common) != len(a.prompts) else slice(None)
    ib = [b.position[p] for p in common] if len(common) != len(b.prompts) else slice(None)
    ya, yb = a.y[:, ia], b.y[:, ib]
    n = len(common)
    d = ya.mean(axis=0) - yb.mean(axis=0)
    diff = float(d.mean())
    var_d = float(d.var(ddof=1))
    net_a, _ = seed_variance(ya)
    net_b, _ = seed_variance(yb)
    sa, sb = ya.shape[0], yb.shape[0]
    parts = [(var_d / n, n - 1), (net_a / sa, sa - 1), (net_b / sb, sb - 1)]
    se = math.sqrt(sum(v for v, _ in parts))
    df = satterthwaite(parts)
    # The bootstrap: prompts (one draw for both methods), and each method's shrunk seed effects.
    idx = rng.integers(0, n, size=(rounds, n))
    dev = (d[idx].mean(axis=1) - diff) * math.sqrt(n / (n - 1))
    seed_sd = math.sqrt(net_a / sa + net_b / sb)
    if seed_sd > 0:
        dev += rng.standard_normal(rounds) * seed_sd
    dev *= quantile_t(df) / Z975
    lo, hi = np.quantile(dev, [0.025, 0.975])
    p = (1 + int(np.count_nonzero(np.abs(dev) >= abs(diff)))) / (rounds + 1)
    within = (a.within if a.within is not None else 0.0, b.within if b.within is not None else 0.0)
    k = max(1, min(a.k, b.k))
    sample_part = (within[0] / sa + within[1] / sb) / k
    components = {"prompt": max(0.0, var_d - sample_part), "sample": (within[0] + within[1]) / 2,
                  "seed": net_a + net_b, "known_seed": sa > 1 and sb > 1}
    mde = detectable(components, n, k, min(sa, sb))
    pair = Pair(a=a.group, b=b.group, a_label=a.label, b_label=b.label, diff=diff, lo=diff + float(lo),
                hi=diff + float(hi), se=se, p=p, mde=mde, prompts=n, seeds_a=sa, seeds_b=sb, k=k,
                components=components)
    if diff < 0:
        pair = flipped(pair)
    return pair


def flipped(p: Pair) -> Pair:
    return Pair(a=p.b, b=p.a, a_label=p.b_label, b_label=p.a_label, diff=-p.diff, lo=-p.hi, hi=-p.lo, se=p.se,
                p=p.p, mde=p.mde, prompts=p.prompts, seeds_a=p.seeds_b, seeds_b=p.seeds_a, k=p.k,
                components=p.components)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


# --- power and planning -------------------------------------------------------------------------------


def standard_error(components: dict, prompts: int, k: int, seeds: int) -> tuple[float, float]:
    """(SE, degrees of freedom) of two methods' difference with `prompts` eval prompts, `k` samples
    each and `seeds` runs per method (Welch-Satterthwaite over the prompt and seed terms)."""
    by_prompt = (components["prompt"] + 2 * components["sample"] / (k * seeds)) / prompts
    by_seed = components["seed"] / seeds
    se = math.sqrt(by_prompt + by_seed)
    return se, satterthwaite([(by_prompt, prompts - 1), (by_seed, 2 * (seeds - 1))])


def detectable(components: dict, prompts: int, k: int, seeds: int) -> float:
    """The smallest difference a two-sided test at alpha 0.05 detects with 80% power:
    (t_{0.975, df} + z_{0.8}) x SE."""
    se, df = standard_error(components, prompts, k, seeds)
    return (quantile_t(df) + Z_POWER) * se


MOST = 1_000_000  # beyond this many prompts, samples or seeds: "no number would"


def plan(components: dict, delta: float, *, prompts: int, k: int, seeds: int) -> dict:
    """How many eval prompts, samples per prompt or seeds per method (one changed, the others as given)
    detect `delta` with 80% power at alpha 0.05; None where no number would (another term alone is
    too large, or it would take over a million)."""

    def least(make) -> int | None:
        if delta <= 0 or detectable(components, *make(MOST)) > delta:
            return None
        lo, hi = 1, MOST  # detectable falls as any of the three grows: bisect the least that is enough
        while lo < hi:
            mid = (lo + hi) // 2
            if detectable(components, *make(mid)) <= delta:
                hi = mid
            else:
                lo = mid + 1
        return lo

    return {
        "delta": delta,
        "prompts": least(lambda n: (max(n, 2), k, seeds)),
        "samples_per_prompt": least(lambda n: (prompts, n, seeds)),
        "seeds": least(lambda n: (prompts, k, n)),
    }


def default_components(sample_sd: float = DEFAULT_SAMPLE_SD, prompt_sd: float = DEFAULT_PROMPT_SD,
                       seed_sd: float = DEFAULT_SEED_SD) -> dict:
    return {"prompt": prompt_sd ** 2, "sample": sample_sd ** 2, "seed": 2 * seed_sd ** 2, "known_seed": True}


def expected_detectable(prompts: int, k: int, seeds: int) -> float:
    """Before launch: the difference an experiment of these settings can expect to detect, from the
    documented default variances (DEFAULT_*_SD)."""
    return detectable(default_components(), max(1, prompts), max(1, k), max(1, seeds))


# --- all pairs ----------------------------------------------------------------------------------------


@dataclass
class Verdicts:
    pairs: list[Pair]
    methods: list[dict]  # per method: group, label, seeds, prompts, steps
    alpha: float = ALPHA
    rounds: int = ROUNDS
    notes: list[str] = field(default_factory=list)

    @property
    def sentences(self) -> list[str]:
        return [p.sentence for p in self.pairs]

    def as_dict(self) -> dict:
        return {"alpha": self.alpha, "power": POWER, "bootstrap_rounds": self.rounds, "correction": "holm",
                "methods": self.methods, "pairs": [p.as_dict() for p in self.pairs], "notes": self.notes}


def sentence(p: Pair, m: int, digits: int = 3) -> str:
    ci = f"[{fmt(p.lo, digits)}, {fmt(p.hi, digits)}]"
    if p.significant:
        return f"{p.a_label} beats {p.b_label} by {fmt(p.diff, digits)} {ci}"
    if p.lo > 0 and m > 1:
        return (f"{p.a_label} and {p.b_label} cannot be told apart after correcting for {m} comparisons "
                f"(difference {fmt(p.diff, digits)} {ci})")
    return f"{p.a_label} and {p.b_label} cannot be told apart (difference {fmt(p.diff, digits)} {ci})"


def verdicts(methods: list[MethodRewards], *, alpha: float = ALPHA, rounds: int = ROUNDS,
             seed: int = SEED) -> Verdicts:
    """Every pair of methods compared (in the given order of methods), Holm-corrected at `alpha`."""
    pairs = []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            # A pair's own random stream: its interval does not depend on which other methods are shown.
            first, second = sorted((a.group, b.group))
            rng = np.random.default_rng([seed, zlib.crc32(first.encode()), zlib.crc32(second.encode())])
            pair = compare_pair(a, b, rng, rounds)
            if pair is not None:
                pairs.append(pair)
    for pair, adjusted in zip(pairs, holm([p.p for p in pairs]), strict=True):
        pair.p_holm = adjusted
        pair.significant = adjusted < alpha
    m = len(pairs)
    for pair in pairs:
        pair.sentence = sentence(pair, m)
        notes = []
        if not pair.significant and pair.underpowered:
            notes.append(f"below the smallest difference this comparison can detect ({fmt(pair.mde)})")
        if pair.seeds_a < 2 or pair.seeds_b < 2:
            notes.append("one seed: seed-to-seed variation is not in the interval")
        pair.note = "; ".join(notes)
    info = [{"group": mr.group, "label": mr.label, "seeds": mr.seeds, "prompts": len(mr.prompts),
             "samples_per_prompt": mr.k, "steps": sorted(set(mr.steps))} for mr in methods]
    notes = []
    if len({s for mr in methods for s in mr.steps}) > 1:
        notes.append("The runs' final evaluations are at different steps.")
    return Verdicts(pairs=pairs, methods=info, alpha=alpha, rounds=rounds, notes=notes)


def from_samples(runs: Iterable[tuple[int, str, str, str]], rows: Iterable[tuple], **kwargs) -> Verdicts:
    """The verdicts of runs (id, label, group, group label) — a group is a method's seeds — from sample
    rows (run id, step, prompt key, reward): each run's latest evaluation among the rows. The prompt
    key pairs samples across runs (prompt id and prompt text: runs of several experiments pair only
    on the prompts they share)."""
    latest: dict[int, int] = {}
    rows = list(rows)
    for run_id, step, _, _ in rows:
        if step > latest.get(run_id, -1):
            latest[run_id] = step
    by_run: dict[int, list] = {}
    for run_id, step, key, reward in rows:
        if step == latest[run_id]:
            by_run.setdefault(run_id, []).append((key, reward))
    groups: dict[str, tuple[str, list]] = {}
    for run_id, label, group, group_label in runs:
        if run_id in by_run:
            groups.setdefault(group, (group_label, []))[1].append((label, latest[run_id], by_run[run_id]))
    return verdicts(method_rewards(groups), **kwargs)


def table(v: Verdicts | dict) -> dict:
    """The verdicts as the page and the reports show them: per pair its sentence, the difference with
    its interval, the Holm-adjusted p, the smallest detectable difference, and (for pairs that cannot be
    told apart) the eval prompts, samples per prompt or seeds that would detect the observed difference."""
    doc = v.as_dict() if isinstance(v, Verdicts) else v

    def ways(plan_: dict) -> str:
        parts = [f"{plan_[key]:,} {what}" for key, what in (
            ("prompts", "eval prompts"), ("samples_per_prompt", "samples per prompt"), ("seeds", "seeds per method"))
            if plan_[key] is not None]
        return " or ".join(parts) if parts else "more prompts and seeds together"

    rows = []
    for p in doc["pairs"]:
        plan_ = p.get("to_detect")
        rows.append({
            "sentence": p["sentence"], "significant": p["significant"], "underpowered": p["underpowered"],
            "difference": f"{fmt(p['difference'])} [{fmt(p['low'])}, {fmt(p['high'])}]",
            "p_holm": "< 0.001" if p["p_holm"] is not None and p["p_holm"] < 0.001 else fmt(p["p_holm"]),
            "detectable": fmt(p["detectable"]), "note": p["note"],
            "pair": f"{p['a_label']} − {p['b_label']}", "to_detect": ways(plan_) if plan_ else None,
        })
    return {"rows": rows, "notes": doc["notes"], "methods": doc["methods"], "rounds": doc["bootstrap_rounds"],
            "pairs": len(rows), "underpowered": sum(r["underpowered"] and not r["significant"] for r in rows)}
