"""Equal tuning budgets: each method gets the same number of trials over a search space of its main
hyperparameters, proposed by Optuna (TPE or random sampling; median pruning on the intermediate
evaluations). Stateless over the database: a study is rebuilt from the trials recorded so far (their
parameters, validation scores and intermediate values) each time a trial is asked for or checked, so
the rows stay the source of truth and any worker can drive the sweep. Plain Python (no Django).

Trials are selected on the validation half of the held-out prompts (compare.core.sweeps), so the
score Optuna optimises never sees the half the winners are reported on."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from training.config import CONFIG_CLASSES, ConfigError

SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a key of the method's training config and its range."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def distribution(self):
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.log)


# Sensible defaults per method: the learning rate, and the knob that holds the policy near the
# reference (DPO's beta, PPO's KL coefficient and clip range, GRPO/RLOO's KL coefficient).
SEARCH_SPACES: dict[str, tuple[Param, ...]] = {
    "sft": (Param("learning_rate", 1e-5, 3e-3, log=True),),
    "dpo": (Param("learning_rate", 1e-6, 1e-3, log=True), Param("beta", 0.01, 1.0, log=True)),
    "ppo": (Param("learning_rate", 1e-6, 1e-3, log=True), Param("kl_coef", 1e-3, 0.5, log=True),
            Param("cliprange", 0.05, 0.4)),
    "grpo": (Param("learning_rate", 1e-6, 1e-3, log=True), Param("beta", 1e-3, 0.5, log=True)),
    "rloo": (Param("learning_rate", 1e-6, 1e-3, log=True), Param("beta", 1e-3, 0.5, log=True)),
}


def check_space(method: str, space: tuple[Param, ...]) -> None:
    """Every parameter is a field of the method's config and its range lies within that field's bounds."""
    if method not in CONFIG_CLASSES:
        raise ConfigError("method", f"unknown method {method!r}")
    specs = {s["name"]: s for s in CONFIG_CLASSES[method].field_specs()}
    for p in space:
        spec = specs.get(p.name)
        if spec is None:
            raise ConfigError(p.name, f"not a setting of {method}")
        if not p.low < p.high or (p.log and p.low <= 0):
            raise ConfigError(p.name, f"empty or invalid range [{p.low}, {p.high}]")
        if (spec["min"] is not None and p.low < spec["min"]) or (spec["max"] is not None and p.high > spec["max"]):
            raise ConfigError(p.name, f"range [{p.low}, {p.high}] outside the allowed [{spec['min']}, {spec['max']}]")


@dataclass
class SweepConfig:
    """The budget each method gets, and how trials are proposed."""

    trials: int = field(default=8, metadata={"help": "Trials per method (the same for every method)."})
    sampler: str = field(default="tpe", metadata={"help": "tpe (Optuna's TPE) or random."})
    prune: bool = field(default=True, metadata={"help": "Stop trials whose intermediate validation reward is "
                                                        "below the median of earlier trials at that step."})
    startup_trials: int = field(default=3, metadata={"help": "Trials sampled at random before TPE and pruning start."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampler (the same trials again for the same results)."})
    spaces: dict[str, tuple[Param, ...]] = field(default_factory=lambda: dict(SEARCH_SPACES))

    def __post_init__(self) -> None:
        if not 1 <= self.trials <= 200:
            raise ConfigError("trials", "must be between 1 and 200")
        if self.sampler not in SAMPLERS:
            raise ConfigError("sampler", f"must be one of {', '.join(SAMPLERS)}")
        if not 0 <= self.startup_trials <= 200:
            raise ConfigError("startup_trials", "must be between 0 and 200")
        for method, space in self.spaces.items():
            check_space(method, space)


@dataclass
class Trial:
    """A trial as recorded: its number, parameters, state ("running", "complete", "pruned", "failed"),
    its validation score when complete, and its intermediate validation scores by step."""

    number: int
    params: dict
    state: str = "running"
    value: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)


def study(config: SweepConfig, method: str, trials: list[Trial]):
    """An in-memory Optuna study holding the finished trials (running ones are left out: Optuna proposes
    without them, as it does for trials still running in parallel). Optuna is imported here: the
    comparison core reads this module's plain functions without it."""
    import optuna
    from optuna.trial import TrialState, create_trial

    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = config.spaces[method]
    n_done = sum(t.state != "running" for t in trials)
    if config.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=config.seed + n_done)
    else:
        sampler = optuna.samplers.TPESampler(seed=config.seed + n_done, n_startup_trials=config.startup_trials)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials) if config.prune
              else optuna.pruners.NopPruner())
    s = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    dists = {p.name: p.distribution() for p in space}
    for t in trials:
        if t.state == "running":
            continue
        s.add_trial(create_trial(state=states[t.state], value=t.value if t.state == "complete" else None,
                                 params={k: v for k, v in t.params.items() if k in dists},
                                 distributions={k: d for k, d in dists.items() if k in t.params},
                                 intermediate_values=dict(t.intermediate)))
    return s


def next_params(config: SweepConfig, method: str, trials: list[Trial]) -> dict | None:
    """The parameters of the method's next trial; None once its budget of trials is spent."""
    if len(trials) >= config.trials:
        return None
    s = study(config, method, trials)
    trial = s.ask({p.name: p.distribution() for p in config.spaces[method]})
    return dict(trial.params)


def should_prune(config: SweepConfig, method: str, trials: list[Trial], current: Trial) -> bool:
    """Whether the running trial `current` should stop, from its intermediate validation scores so far
    against the finished trials' at the same steps."""
    if not config.prune or not current.intermediate:
        return False
    s = study(config, method, [t for t in trials if t.number != current.number])
    trial = s.ask({p.name: p.distribution() for p in config.spaces[method]})
    for step, value in sorted(current.intermediate.items()):
        if math.isfinite(value):
            trial.report(value, step)
    return trial.should_prune()


def from_settings(settings: dict) -> SweepConfig | None:
    """The SweepConfig of an experiment's `sweep` field (None when empty: no sweep)."""
    if not settings:
        return None
    known = {"trials", "sampler", "prune", "startup_trials", "seed"}
    unknown = set(settings) - known
    if unknown:
        raise ConfigError(sorted(unknown)[0], "not a sweep setting")
    return SweepConfig(**settings)


# --- validation and test halves of the held-out prompts ------------------------------------------------


def split(keys: Iterable) -> tuple[set, set]:
    """(validation, test): the sorted prompt keys alternately, the first to validation. Fixed by the
    prompts alone (not by a seed), so every trial of every method is split the same way."""
    ordered = sorted(set(keys))
    return set(ordered[0::2]), set(ordered[1::2])


@dataclass
class Scores:
    validation: float | None
    test: float | None
    intermediate: dict[int, float] = field(default_factory=dict)  # step -> validation mean


def scores(rows: Iterable[tuple]) -> dict[int, Scores]:
    """Per run, from sample rows (run id, step, prompt key, reward): the mean reward on the validation
    and the test prompts at its last evaluation, and on the validation prompts at every evaluation."""
    rows = [r for r in rows if r[3] is not None and math.isfinite(r[3])]
    validation, _ = split(r[2] for r in rows)
    sums: dict[tuple, list[float]] = {}
    for run, step, key, reward in rows:
        acc = sums.setdefault((run, step, key in validation), [0.0, 0])
        acc[0] += reward
        acc[1] += 1
    last: dict[int, int] = {}
    for run, step, _ in sums:
        last[run] = max(last.get(run, -1), step)

    def mean(run: int, step: int, is_val: bool) -> float | None:
        acc = sums.get((run, step, is_val))
        return acc[0] / acc[1] if acc and acc[1] else None

    out: dict[int, Scores] = {}
    for run, end in last.items():
        steps = sorted({s for (r, s, v) in sums if r == run and v})
        out[run] = Scores(validation=mean(run, end, True), test=mean(run, end, False),
                          intermediate={s: mean(run, s, True) for s in steps})
    return out
