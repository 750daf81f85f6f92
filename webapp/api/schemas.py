"""The API's input and output types (pydantic, through django-ninja). The views declare them; requests are
validated with them and the OpenAPI document (/api/openapi.json) is generated from them, so the document
cannot drift from what the endpoints accept and send."""

from __future__ import annotations

from typing import Any, Literal

from ninja import Schema
from pydantic import BaseModel, ConfigDict, Field

from webapp.experiments.forms.experiment import ExperimentForm
from webapp.experiments.methods import METHODS
from webapp.experiments.models import Run
from webapp.ratings.models import Vote

Method = Literal[METHODS]  # type: ignore[valid-type]
RunState = Literal[tuple(Run.State.values)]  # type: ignore[valid-type]
Outcome = Literal[tuple(Vote.Outcome.values)]  # type: ignore[valid-type]
TRIALS = ExperimentForm.base_fields["sweep_trials"]  # the sweep's bounds are the form's
Sampler = Literal[tuple(value for value, _ in ExperimentForm.base_fields["sweep_sampler"].choices)]  # type: ignore[valid-type]


class ErrorBody(Schema):
    code: str
    message: str
    fields: dict[str, list[str]] | None = Field(None, description="Field name -> messages (validation errors only).")


class Error(Schema):
    """Every error: {"error": {"code", "message", "fields"}}."""

    error: ErrorBody


class Index(Schema):
    schema_: str = Field(alias="schema")
    docs: str
    experiments: str
    tokens: str


class Latest(Schema):
    reward: float | None = None
    kl: float | None = None
    step: int | None = None


class RunOut(Schema):
    id: int
    experiment: int
    method: str
    seed: int
    label: str
    state: RunState
    active: bool
    step: int
    total: int
    percent: int
    eta_s: float | None = None
    phase: str
    attempts: int
    stop_requested: bool
    depends_on: int | None = None
    latest: Latest
    error: str
    log: list[str]
    config: dict[str, Any] = Field(description="The run's training config (models as references, never paths).")
    created: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    url: str
    api_url: str
    queue_position: int | None = Field(None, description="Its place in its queue while queued (1: next), else null.")
    trial: int | None = Field(None, description="Its number among its method's sweep trials (null outside a sweep).")


class SweepSettings(Schema):
    trials: int = Field(description="Trials per method (the same budget for every method).")
    sampler: str = Field(description="tpe (Optuna's TPE) or random.")
    prune: bool = Field(description="Trials below the median of earlier ones at an evaluation are stopped.")
    startup_trials: int = Field(description="Trials sampled at random before TPE and pruning start.")
    seed: int = Field(description="The sampler's seed.")


class ExperimentOut(Schema):
    id: int
    name: str
    owner: str
    base_model: str
    task: str
    methods: list[str]
    seeds: int
    max_steps: int
    eval_every: int
    eval_prompts: int
    eval_samples: int
    max_new_tokens: int
    hyperparams: dict[str, dict[str, Any]]
    rl_from_sft: bool
    queue: str
    saved_dataset: int | None = Field(None, description="The dataset (webapp/datasets) its runs train on, if any.")
    sweep: SweepSettings | None = Field(None, description="Its equal-budget sweep (GET .../sweep); null: none.")
    created: str | None = None
    state: Literal["running", "queued", "failed", "cancelled", "finished", "empty"]
    url: str
    api_url: str
    report_url: str | None = Field(None, description="The JSON report (when the reports app is installed).")
    downloads: dict[str, str] | None = Field(None, description="The report's export pages by format.")
    runs: list[RunOut] | None = None


class Page(Schema):
    count: int
    offset: int
    limit: int
    next: str | None = None


class ExperimentPage(Page):
    results: list[ExperimentOut]


class RunList(Schema):
    results: list[RunOut]


class MetricPoint(Schema):
    name: str
    step: int
    value: float | None = None
    wall_time: float | None = None


class MetricPage(Page):
    run: int
    names: list[str]
    results: list[MetricPoint]


class SampleOut(Schema):
    step: int
    prompt_id: int
    index: int
    prompt: str
    completion: str
    reward: float | None = None


class SamplePage(Page):
    run: int
    steps: list[int]
    results: list[SampleOut]


class SweepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=TRIALS.min_value, le=TRIALS.max_value, description="Trials per method (0: no sweep).")
    sampler: Sampler = Field("tpe", description="tpe (Optuna's TPE) or random.")


class NewExperiment(BaseModel):
    """The fields of the new-experiment form, validated by the same form. Per-method settings go in
    `hyperparams` ({method: {setting: value}}) or flat as `<method>-<setting>`. Left out: the defaults."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200, description="A name for the experiment.")
    base_model: str | None = Field(None, max_length=500, description=(
        "tiny, demo, a hub id (org/name), run:<id> (a finished run's final model) or a folder under a data root."))
    task: str = Field(max_length=100, description="A built-in task (arithmetic, sentiment, ...).")
    methods: list[Method] = Field(min_length=1, max_length=len(METHODS), json_schema_extra={"uniqueItems": True},
                                  description="One run per method and seed; each method at most once.")
    seeds: int | None = Field(None, description="Runs per method (1 to 5).")
    max_steps: int | None = Field(None, description="Training steps.")
    eval_every: int | None = Field(None, description="Evaluate every N steps.")
    eval_prompts: int | None = Field(None, description="Held-out eval prompts.")
    eval_samples: int | None = Field(None, description="Completions per eval prompt.")
    max_new_tokens: int | None = Field(None, description="Generation length.")
    rl_from_sft: bool | None = Field(None, description="Other methods start from the SFT model.")
    queue: str | None = Field(None, max_length=64, description="The Celery queue of the workers.")
    hyperparams: dict[str, dict[str, Any]] | None = Field(
        None, description='Per-method settings, e.g. {"grpo": {"beta": 0.1}}.')
    sweep: SweepIn | None = Field(None, description=(
        "An equal tuning budget: every method gets `trials` runs over its main hyperparameters (Optuna), "
        "chosen on half the eval prompts and reported on the other. Not with rl_from_sft."))


class SweepTrial(Schema):
    run: int
    number: int = Field(description="Its number among its method's trials.")
    label: str
    params: dict[str, float] = Field(description="The searched hyperparameters' values.")
    state: Literal["running", "complete", "pruned", "failed"] = Field(
        description="As the sweep reads it: complete (succeeded, scored), pruned (stopped by the sweep), failed.")
    run_state: RunState
    validation: float | None = Field(None, description="Mean gold reward on the validation half at its last evaluation.")
    pruned: bool


class SweepBest(Schema):
    run: int
    label: str
    params: dict[str, float]
    validation: float | None = None
    test: float | None = Field(None, description="Mean gold reward on the test half (the reported result).")


class Sensitivity(Schema):
    spearman: float | None = Field(None, description="Rank correlation of the (log) value with the validation reward.")
    spread: float | None = Field(None, description="Best minus worst validation reward across trials.")


class Compute(Schema):
    wall_s: float
    steps: int
    tokens: float


class SweepMethod(Schema):
    method: str
    label: str
    budget: int = Field(description="Its trials in all (1 for a method without a search space).")
    searched: list[str] = Field(description="The hyperparameters searched.")
    trials: list[SweepTrial]
    completed: int
    pruned: int
    best: SweepBest | None = Field(None, description="The trial best on the validation half, once one is complete.")
    sensitivity: dict[str, Sensitivity]
    compute: Compute = Field(description="Used by all its trials, pruned ones included.")


class VerdictRow(Schema):
    sentence: str
    pair: str
    significant: bool
    underpowered: bool
    difference: str = Field(description="The difference on the test half, with its interval (formatted).")
    p_holm: str
    detectable: str
    note: str | None = None
    to_detect: str | None = None


class SweepVerdicts(Schema):
    rows: list[VerdictRow]
    notes: list[str]


class SweepOut(Schema):
    experiment: int
    settings: SweepSettings
    validation_prompts: int = Field(description="Held-out prompts trials are chosen on.")
    test_prompts: int = Field(description="Held-out prompts the winners are reported and compared on.")
    methods: list[SweepMethod]
    verdicts: SweepVerdicts = Field(description="The winners compared on the test half, as the compare page shows.")


class RateItem(Schema):
    done: bool
    reason: str | None = None
    token: str | None = None
    prompt: str | None = None
    a: str | None = None
    b: str | None = None
    progress: dict[str, int] | None = None
    reveals: list[dict[str, Any]] | None = Field(None, description="Held-back reveals, once the rater is done.")


class NewVote(Schema):
    token: str = Field(min_length=1, description="From GET /api/experiments/{id}/rate/next.")
    outcome: Outcome = Field(description="a: the left text is better; b: the right one; tie; both_bad.")


class Side(Schema):
    label: str
    reward: float | None = None


class Reveal(Schema):
    a: Side
    b: Side


class VoteResult(Schema):
    outcome: str
    created: bool
    reveal: Reveal | None = Field(None, description="Who wrote which side; null while the owner holds reveals back.")
    progress: dict[str, int]


class LeaderboardRow(Schema):
    contestant: str
    label: str
    method: str
    votes: int
    rank: int | None = None
    bt_score: float | None = None
    bt_low: float | None = None
    bt_high: float | None = None
    elo: float | None = None
    win_rate: float | None = None
    reward: float | None = None


class Leaderboard(Schema):
    model_config = ConfigDict(extra="allow")

    experiment: int
    step: int | None = None
    both_bad: str
    votes: int
    rows: list[LeaderboardRow]
