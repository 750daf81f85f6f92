"""The runs as the comparison shows them, on plain data: `RunData` (labels, groups, colours, series),
the summary table, the samples grid and the warnings when runs of several experiments may not be
comparable. The loader builds the input from the database, the reports from their document."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from webapp.compare.core.series import KL, REWARD, TOKENS, SeriesData
from webapp.compare.core.stats import fmt, mean_ci, reward_per_nat
from webapp.experiments.methods import METHOD_COLORS

OTHER_COLORS = ("#0c8599", "#5c940d", "#862e9c", "#d9480f", "#364fc7")
DASHES = ("solid", "dash", "dot", "longdash", "dashdot")
GREY = "#495057"


@dataclass
class RunData:
    """One run as the charts, the summary and the samples grid see it (the info step's input)."""

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
    color: str = GREY
    dash: str = "solid"
    depends_on: bool = False  # it starts from another run's model (its step 0 is not the base model)
    offset: int = 0  # steps of the run it starts from: where the chained step axis places its step 0
    url: str = ""  # its page, where there is one
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


# --- colours and groups -------------------------------------------------------------------------------


# Where one method comes from several experiments, each further experiment's runs of it turn the method's
# hue by these degrees (and darken a little): the method still reads from the colour, every run is distinct.
EXPERIMENT_HUES = (0, 40, -40, 80, -80, 120, -120)


def style_runs(runs: list[RunData]) -> list[RunData]:
    """A colour per method (lighter for later seeds); where one method comes from several experiments a
    hue turn and a dash per experiment (else every line is solid: dotted noisy lines read badly). No two
    runs share a colour."""
    seen_in_group: dict[str, int] = {}
    others: dict[str, str] = {}
    experiments_of: dict[str, set[int]] = {}
    for run in runs:
        experiments_of.setdefault(run.method, set()).add(run.experiment)
    dashed = any(len(e) > 1 for e in experiments_of.values())
    used: set[str] = set()
    for run in runs:
        base = METHOD_COLORS.get(run.method)
        if base is None:
            base = others.setdefault(run.method, OTHER_COLORS[len(others) % len(OTHER_COLORS)])
        if len(experiments_of[run.method]) > 1:
            rank = sorted(experiments_of[run.method]).index(run.experiment)
            if rank:
                turn = EXPERIMENT_HUES[rank % len(EXPERIMENT_HUES)] + 7 * (rank // len(EXPERIMENT_HUES))
                base = darken(turn_hue(base, turn), 0.12)
        k = seen_in_group.get(run.group, 0)
        seen_in_group[run.group] = k + 1
        color = lighten(base, min(0.55, 0.18 * k))
        nudge = 0
        while color in used:  # many seeds (or experiments): keep every line its own colour
            nudge += 1
            color = turn_hue(color, 11 * nudge)
        used.add(color)
        run.color = color
        run.dash = DASHES[run.experiment % len(DASHES)] if dashed else "solid"
    return runs


def turn_hue(hex_color: str, degrees: float) -> str:
    import colorsys

    r, g, b = (int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    h, light, sat = colorsys.rgb_to_hls(r, g, b)
    r, g, b = colorsys.hls_to_rgb((h + degrees / 360) % 1.0, light, sat)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def darken(hex_color: str, amount: float) -> str:
    r, g, b = (round(int(hex_color[i:i + 2], 16) * (1 - amount)) for i in (1, 3, 5))
    return f"#{r:02x}{g:02x}{b:02x}"


def group_color(runs: list[RunData], group: str) -> str:
    for run in runs:
        if run.group == group:
            return METHOD_COLORS.get(run.method, run.color)
    return GREY


def lighten(hex_color: str, amount: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    r, g, b = (round(c + (255 - c) * amount) for c in (r, g, b))
    return f"#{r:02x}{g:02x}{b:02x}"


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def groups_of(runs: list[RunData]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for run in runs:
        out.setdefault(run.group, []).append(run)
    return out


# --- summary ------------------------------------------------------------------------------------------


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
                     "step": s.last_step, "cells": [fmt(getattr(s, col), digits) for col, _, digits in SUMMARY_COLUMNS],
                     "numbers": {col: getattr(s, col) for col, _, _ in SUMMARY_COLUMNS}})
    return {"columns": [{"key": k, "label": label} for k, label, _ in SUMMARY_COLUMNS], "groups": groups, "runs": rows}


# --- samples side by side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GridPlan:
    """Which evaluation each column of the samples grid shows: `chosen` (the step asked for, else the
    last), per run the latest evaluation up to it (`shown`), and the run whose step 0 is the base model."""

    steps: list[int]
    chosen: int | None
    shown: dict[int, int]
    base: RunData | None

    def wanted(self) -> list[tuple[int, int]]:
        """(run id, step) of the samples the grid shows."""
        return [*self.shown.items(), *([(self.base.id, 0)] if self.base is not None else [])]


def grid_plan(runs: list[RunData], steps_of: dict[int, list[int]], step: int | None = None) -> GridPlan:
    """The plan of the grid at `step`, from each run's sorted evaluation steps with samples. A run with no
    evaluation at that step shows its latest one before it."""
    steps = sorted({s for ss in steps_of.values() for s in ss})
    if not steps:
        return GridPlan([], None, {}, None)
    chosen = steps[-1] if step is None else max([s for s in steps if s <= step] or steps[:1])
    shown = {}
    for run in runs:
        before = [s for s in steps_of.get(run.id, []) if s <= chosen]
        if before:
            shown[run.id] = before[-1]
    base = next((run for run in runs if not run.depends_on and 0 in steps_of.get(run.id, [])), None)
    base = base or next((run for run in runs if 0 in steps_of.get(run.id, [])), None)
    return GridPlan(steps, chosen, shown, base)


def samples_grid(plan: GridPlan, runs: list[RunData], rows: Iterable[tuple]) -> dict:
    """Completions side by side: eval prompts down, one column for the base model (step 0 of a run that
    starts from it) and one per run. `rows` (run id, step, prompt id, prompt, completion, reward) hold
    at least the samples `plan.wanted()`, by prompt and sample index. Completions are untrusted text:
    whatever shows them shows them as text only."""
    if plan.chosen is None:
        return {"steps": [], "step": None, "columns": [], "prompts": []}
    base = plan.base
    cells: dict[tuple, list] = {}
    prompts: dict[int, str] = {}
    for run_id, s, prompt_id, prompt, completion, reward in rows:
        prompts.setdefault(prompt_id, prompt)
        if base is not None and run_id == base.id and s == 0:
            cells.setdefault(("base", prompt_id), []).append({"completion": completion, "reward": reward})
        if plan.shown.get(run_id) == s:
            cells.setdefault((run_id, prompt_id), []).append({"completion": completion, "reward": reward})
    columns = []
    if base is not None:
        columns.append({"key": "base", "label": "Base model", "note": f"step 0 of {base.label}",
                        "run": None, "step": 0, "color": GREY})
    for run in runs:
        s = plan.shown.get(run.id)
        note = "no evaluation yet" if s is None else (f"step {s}" if s == plan.chosen else f"step {s} (latest by then)")
        column = {"key": run.id, "label": run.label, "note": note, "run": run.id, "step": s, "color": run.color}
        if run.url:
            column["url"] = run.url
        columns.append(column)
    return {
        "steps": plan.steps, "step": plan.chosen, "columns": columns,
        "prompts": [{"id": pid, "prompt": text, "cells": [cells.get((c["key"], pid), []) for c in columns]}
                    for pid, text in sorted(prompts.items())],
    }


# --- can these runs be compared? --------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What makes a run's numbers comparable with another's, as text: its experiment, the task (the
    gold reward), the eval prompts configured, the base model (KL's reference), generation settings."""

    run: int
    experiment: int
    experiment_name: str
    task: str
    eval_prompts: str
    model: str
    generation: str


def comparability_warnings(setups: list[Setup], prompts: dict[int, set]) -> list[str]:
    """Why runs from several experiments may not be comparable: different eval prompts (`prompts`: the
    run's step-0 (prompt id, prompt) pairs, else the task and prompt count), gold reward (task), base
    model (KL is measured from it) or generation settings."""
    if len({s.experiment for s in setups}) < 2:
        return []
    warnings = []

    def differ(values: dict) -> bool:
        return len(set(values.values())) > 1

    def which(values: dict, show: bool = True) -> str:
        by_value: dict = {}
        for s in setups:
            if s.run in values:
                by_value.setdefault(values[s.run], []).append(s.experiment_name)
        return " vs ".join(", ".join(dict.fromkeys(names)) + (f" ({value})" if show else "")
                           for value, names in by_value.items())

    tasks = {s.run: s.task for s in setups}
    if differ(tasks):
        warnings.append(f"The gold rewards differ (different tasks): {which(tasks)}. "
                        "Rewards are not on one scale.")
    seen = {s.run: frozenset(prompts[s.run]) for s in setups if s.run in prompts}
    configured = {s.run: f"{s.eval_prompts} prompts of {s.task}" for s in setups}
    if differ(seen):
        warnings.append(f"The eval prompt sets differ: {which(seen, show=False)}. "
                        "Rewards and samples are not of the same prompts.")
    elif differ(configured):
        warnings.append(f"The eval prompt sets differ: {which(configured)}. "
                        "Rewards and samples are not of the same prompts.")
    models = {s.run: s.model for s in setups}
    if differ(models):
        warnings.append(f"The base models differ: {which(models)}. KL is measured from different references.")
    gen = {s.run: s.generation for s in setups}
    if differ(gen):
        warnings.append(f"The evaluation settings differ: {which(gen)}.")
    return warnings
