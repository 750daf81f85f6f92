"""The arena of one experiment at one evaluation step: its contestants, its items, which item a rater
sees next, and the opaque tokens that stand for items in the page.

Blindness: the page and its requests carry an item only as a signed token holding a random nonce; the
item itself (which contestant is on which side) stays in the rater's server-side session until the vote
is cast. Nothing the browser holds before the vote tells the two completions' authors apart."""

from __future__ import annotations

import random
import secrets
from dataclasses import asdict, dataclass
from functools import cached_property
from itertools import combinations

from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, Q
from django.utils import timezone

from webapp.experiments.models import Experiment, Metric, Sample
from webapp.ratings.models import BASE, RatingSetup, RedeemedToken, Vote

REPEAT_SHARE = 0.1  # share of items that repeat one of the rater's earlier items (consistency)
REPEAT_MIN_VOTES = 5  # a rater's votes at a step before repeats start
REPEAT_NOT_LAST = 3  # never repeat one of the rater's last few items
TOKEN_SALT = "ptlab.ratings.item"
TOKEN_MAX_AGE_S = 7 * 24 * 3600
SESSION_KEY = "ptlab.ratings.pending"
MAX_PENDING = 40  # items shown but not voted on, kept per session (skips, other tabs)
BASE_LABEL = "Base model"


@dataclass(frozen=True)
class Item:
    step: int
    prompt_id: int
    index: int  # which completion of each contestant
    first: str  # contestant keys, first < second
    second: str
    left_is_first: bool
    repeat: bool = False

    @property
    def left(self) -> str:
        return self.first if self.left_is_first else self.second

    @property
    def right(self) -> str:
        return self.second if self.left_is_first else self.first


def pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def sample_steps(experiment: Experiment) -> dict[int, set[int]]:
    """{run id: steps with samples} for the runs that have any."""
    steps: dict[int, set[int]] = {}
    rows = Sample.objects.filter(run__experiment=experiment).values_list("run_id", "step").distinct().order_by()
    for run_id, step in rows:
        steps.setdefault(run_id, set()).add(step)
    return steps


def common_steps(steps: dict[int, set[int]]) -> list[int]:
    """Steps at which every run that has samples has them."""
    return sorted(set.intersection(*steps.values())) if steps else []


def default_step(experiment: Experiment) -> int | None:
    """The last evaluation step with samples for every run (None before any)."""
    common = common_steps(sample_steps(experiment))
    return common[-1] if common else None


class Arena:
    """Contestants and prompts of `experiment` at `step` (default: the owner's setup, else the last step
    with samples for every run). Contestants: runs with samples at the step, and the base model (the
    step-0 samples of the first run that starts from the base model) unless the setup leaves it out."""

    def __init__(self, experiment: Experiment, step: int | None = None, include_base: bool | None = None):
        self.experiment = experiment
        self.setup = RatingSetup.for_experiment(experiment)
        self.steps_by_run = sample_steps(experiment)
        self.steps = common_steps(self.steps_by_run)
        if step is None:
            step = self.setup.step if self.setup.step is not None else (self.steps[-1] if self.steps else None)
        self.step = step
        self.include_base = self.setup.include_base if include_base is None else include_base
        self.hold_reveals = self.setup.reveal == RatingSetup.Reveal.AT_END
        self.runs = {run.pk: run for run in experiment.runs.all()}
        self.base_run = next((r for r in self.runs.values() if r.depends_on_id is None
                              and 0 in self.steps_by_run.get(r.pk, ())), None)
        # {contestant: (run id, step it shows)}
        self.sources: dict[str, tuple[int, int]] = {}
        if step is not None:
            for run_id, steps in sorted(self.steps_by_run.items()):
                if step in steps:
                    self.sources[str(run_id)] = (run_id, step)
            if self.include_base and step != 0 and self.base_run is not None:
                self.sources[BASE] = (self.base_run.pk, 0)

    # --- who and what ------------------------------------------------------------------------------

    @property
    def contestants(self) -> list[str]:
        return sorted(self.sources)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(combinations(self.contestants, 2))

    def label(self, key: str) -> str:
        if key == BASE:
            return BASE_LABEL
        run = self.runs.get(int(key)) if key.isdigit() else None
        return f"{run.label} (#{run.pk})" if run else f"deleted run #{key}"

    def method(self, key: str) -> str:
        if key == BASE:
            return "base"
        run = self.runs.get(int(key)) if key.isdigit() else None
        return run.method if run else ""

    @cached_property
    def indices(self) -> dict[str, dict[int, set[int]]]:
        """{contestant: {prompt id: completion indices}}."""
        where = Q()
        for run_id, step in self.sources.values():
            where |= Q(run_id=run_id, step=step)
        found: dict[tuple[int, int], dict[int, set[int]]] = {}
        if where:
            for run_id, step, prompt_id, index in Sample.objects.filter(where).values_list(
                    "run_id", "step", "prompt_id", "index").order_by():
                found.setdefault((run_id, step), {}).setdefault(prompt_id, set()).add(index)
        return {key: found.get(source, {}) for key, source in self.sources.items()}

    @cached_property
    def prompt_ids(self) -> list[int]:
        """Prompts every contestant answered."""
        sets = [set(by_prompt) for by_prompt in self.indices.values()]
        return sorted(set.intersection(*sets)) if sets else []

    @property
    def total_items(self) -> int:
        return len(self.pairs) * len(self.prompt_ids)

    def rewards(self) -> dict[str, float | None]:
        """Each contestant's `eval/reward` at the step it shows (the mean reward of its samples there when
        the metric is missing)."""
        sources = self.sources
        where = Q()
        for run_id, step in sources.values():
            where |= Q(run_id=run_id, step=step)
        found: dict[tuple[int, int], float | None] = {}
        if where:
            for run_id, step, value in Metric.objects.filter(where, name="eval/reward").values_list(
                    "run_id", "step", "value").order_by("id"):
                found[(run_id, step)] = value
            missing = [s for s in sources.values() if found.get(s) is None]
            if missing:
                where = Q()
                for run_id, step in missing:
                    where |= Q(run_id=run_id, step=step)
                for row in Sample.objects.filter(where).values("run_id", "step").annotate(r=Avg("reward")).order_by():
                    found[(row["run_id"], row["step"])] = row["r"]
        return {key: found.get(source) for key, source in sources.items()}

    # --- items -------------------------------------------------------------------------------------

    def _index_for(self, first: str, second: str, prompt_id: int, revealed: set | None = None) -> int | None:
        """The completion index shown for a pair on a prompt: drawn once per item (every rater sees the same),
        skipping, for a rater with `revealed` texts, any index that would show them a text a vote has already
        attributed (blindness holds across pairs); None when none is left."""
        common = sorted(self.indices[first].get(prompt_id, set()) & self.indices[second].get(prompt_id, set()))
        if not common:
            return None
        order = list(common)
        rng = random.Random(f"{self.experiment.pk}:{self.step}:{first}:{second}:{prompt_id}")
        chosen = rng.choice(order)
        if not revealed:
            return chosen
        order.remove(chosen)
        rng.shuffle(order)
        texts = self.completions
        for index in [chosen, *order]:
            if (prompt_id, texts.get((first, prompt_id, index))) not in revealed and \
                    (prompt_id, texts.get((second, prompt_id, index))) not in revealed:
                return index
        return None

    @cached_property
    def completions(self) -> dict[tuple[str, int, int], str]:
        """{(contestant, prompt id, index): completion} at the step each contestant shows."""
        by_source = {source: key for key, source in self.sources.items()}
        where = Q()
        for run_id, step in self.sources.values():
            where |= Q(run_id=run_id, step=step)
        found = {}
        if where:
            for run_id, step, prompt_id, index, text in Sample.objects.filter(where).values_list(
                    "run_id", "step", "prompt_id", "index", "completion").order_by():
                key = by_source.get((run_id, step))
                if key is not None:
                    found[(key, prompt_id, index)] = text
        return found

    def revealed_texts(self, votes) -> set[tuple[int, str]]:
        """(prompt id, completion) of every text the rater's `votes` (first, second, prompt id, index, ...)
        attributed to its author: a vote's answer reveals both."""
        texts = self.completions
        out = set()
        for first, second, prompt_id, index, *_ in votes:
            for key in (first, second):
                text = texts.get((key, prompt_id, index))
                if text is not None:
                    out.add((prompt_id, text))
        return out

    def _prompt_order(self, first: str, second: str) -> list[int]:
        """The order in which every rater meets a pair's prompts: fixed, so raters overlap (agreement)."""
        order = list(self.prompt_ids)
        random.Random(f"{self.experiment.pk}:{self.step}:{first}:{second}").shuffle(order)
        return order

    def progress(self, rater) -> dict:
        votes = Vote.objects.at(self.experiment, self.step)
        return {"mine": votes.filter(rater=rater).count(), "items": self.total_items, "all": votes.count()}

    def next_item(self, rater, rng: random.Random | None = None) -> Item | None:
        """The next item for `rater`: now and then (REPEAT_SHARE) one of their earlier items again, sides
        drawn anew; otherwise the least-voted pair of contestants (over all raters; then the pair this
        rater saw least), on the first prompt of that pair's fixed order this rater has not rated yet.
        None when the rater has rated every item."""
        rng = rng or random.SystemRandom()
        if len(self.sources) < 2 or not self.prompt_ids:
            return None
        mine = list(Vote.objects.at(self.experiment, self.step).filter(rater=rater).order_by("-updated", "-id")
                    .values_list("first", "second", "prompt_id", "sample_index", "revisions"))
        valid = set(self.pairs)
        prompts = set(self.prompt_ids)
        if len(mine) >= REPEAT_MIN_VOTES and rng.random() < REPEAT_SHARE:
            candidates = [m for m in mine[REPEAT_NOT_LAST:] if (m[0], m[1]) in valid and m[2] in prompts]
            fresh = [m for m in candidates if m[4] == 0]  # never repeated yet
            if fresh or candidates:
                first, second, prompt_id, index, _ = rng.choice(fresh or candidates)
                return Item(self.step, prompt_id, index, first, second, rng.random() < 0.5, repeat=True)
        done: dict[tuple[str, str], set[int]] = {}
        for first, second, prompt_id, *_ in mine:
            done.setdefault((first, second), set()).add(prompt_id)
        # Reveals after each vote: never show this rater a text a reveal has already attributed.
        revealed = self.revealed_texts(mine) if mine and not self.hold_reveals else None
        counts = {(row["first"], row["second"]): row["n"] for row in Vote.objects.at(self.experiment, self.step)
                  .values("first", "second").annotate(n=Count("id")).order_by()}
        pairs = sorted(self.pairs, key=lambda p: (counts.get(p, 0), len(done.get(p, ())), rng.random()))
        for first, second in pairs:
            seen = done.get((first, second), set())
            for prompt_id in self._prompt_order(first, second):
                if prompt_id in seen:
                    continue
                index = self._index_for(first, second, prompt_id, revealed)
                if index is not None:
                    return Item(self.step, prompt_id, index, first, second, rng.random() < 0.5)
        return None

    def next_payload(self, rater, session) -> dict:
        """What a rater is shown next (the page's JSON and the API alike): texts by side and an opaque
        token, nothing about who wrote them; or `done` with the reason."""
        if self.step is None or len(self.contestants) < 2:
            return {"done": True, "reason": "Nothing to rate yet: fewer than two models have samples."}
        item = self.next_item(rater)
        progress = self.progress(rater)
        if item is None:
            done = {"done": True, "progress": progress,
                    "reason": "You have rated every item at this step. Thank you!" if progress["mine"] >= progress[
                        "items"] or self.hold_reveals else "You have rated every item you can rate blind at this "
                    "step (the others would show you texts whose authors you have seen). Thank you!"}
            if self.hold_reveals:
                done["reveals"] = self.held_reveals(rater)
            return done
        texts = self.texts(item)
        return {"done": False, "token": issue_token(session, self.experiment.pk, item), "prompt": texts["prompt"],
                "a": texts["a"], "b": texts["b"], "progress": progress}

    def reveal(self, item: Item, texts: dict) -> dict | None:
        """Who wrote each side of a voted item, or None while reveals are held back (setup: at the end)."""
        if self.hold_reveals:
            return None
        return {"a": {"label": self.label(item.left), "reward": texts["reward_a"]},
                "b": {"label": self.label(item.right), "reward": texts["reward_b"]}}

    def held_reveals(self, rater) -> list[dict]:
        """The authors of everything `rater` voted on at this step, once they are done (reveals held back)."""
        texts = self.completions
        return [{"prompt_id": prompt_id, "first": self.label(first), "second": self.label(second),
                 "first_text": texts.get((first, prompt_id, index)), "second_text": texts.get((second, prompt_id, index)),
                 "result": Vote.result_of(outcome, left_is_first)}
                for first, second, prompt_id, index, outcome, left_is_first in Vote.objects.at(
                    self.experiment, self.step).filter(rater=rater).order_by("id").values_list(
                    "first", "second", "prompt_id", "sample_index", "outcome", "left_is_first")]

    def texts(self, item: Item) -> dict | None:
        """The prompt and the two completions of an item, by side, with their rewards; None when either
        contestant no longer has that completion."""
        if not self.has(item):
            return None
        (run_a, step_a), (run_b, step_b) = self.sources[item.left], self.sources[item.right]
        rows = Sample.objects.filter(Q(run_id=run_a, step=step_a) | Q(run_id=run_b, step=step_b),
                                     prompt_id=item.prompt_id, index=item.index).values_list(
            "run_id", "step", "prompt", "completion", "reward")
        found = {(run_id, step): (prompt, completion, reward) for run_id, step, prompt, completion, reward in rows}
        left, right = found.get((run_a, step_a)), found.get((run_b, step_b))
        if left is None or right is None:
            return None
        return {"prompt": left[0], "a": left[1], "b": right[1], "reward_a": left[2], "reward_b": right[2]}

    def has(self, item: Item) -> bool:
        """Both contestants still take part (the owner may have changed the setup since the item was shown)."""
        return item.first in self.sources and item.second in self.sources


# --- tokens --------------------------------------------------------------------------------------------

def issue_token(session, experiment_id: int, item: Item) -> str:
    """Remember `item` in the session under a random nonce; the page gets only a signed, opaque token."""
    nonce = secrets.token_urlsafe(12)
    pending = dict(session.get(SESSION_KEY, {}))
    pending[nonce] = {"experiment": experiment_id, **asdict(item)}
    while len(pending) > MAX_PENDING:
        pending.pop(next(iter(pending)))
    session[SESSION_KEY] = pending
    return signing.dumps({"e": experiment_id, "n": nonce}, salt=TOKEN_SALT, compress=False)


def redeem_token(session, experiment_id: int, token: str) -> Item | None:
    """The item a token stands for, removed from the session; None when the token is forged, expired,
    of another experiment or already used."""
    try:
        data = signing.loads(token, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE_S)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("e") != experiment_id:
        return None
    pending = dict(session.get(SESSION_KEY, {}))
    nonce = str(data.get("n"))
    entry = pending.pop(nonce, None)
    if entry is None or entry.pop("experiment", None) != experiment_id:
        return None
    session[SESSION_KEY] = pending
    # Sessions are read and saved whole: concurrent requests with one token all find it above. The
    # database decides: exactly one of them inserts the nonce.
    try:
        with transaction.atomic():
            RedeemedToken.objects.create(nonce=nonce[:32])
    except IntegrityError:
        return None
    if random.random() < 0.01:  # now and then, forget nonces whose tokens have expired anyway
        RedeemedToken.objects.filter(created__lt=timezone.now() - timezone.timedelta(seconds=TOKEN_MAX_AGE_S)).delete()
    return Item(**entry)
