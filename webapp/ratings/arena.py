"""The arena of one experiment at one evaluation step: its contestants, its items, and which item a rater
sees next. Items reach the page only as opaque tokens (tokens.py): the arena stays blind."""

from __future__ import annotations

import hashlib
import random
from functools import cached_property
from itertools import combinations

from django.db.models import Avg, Count, Q

from webapp.experiments.methods import method_label
from webapp.experiments.models import Experiment, Metric, Run, Sample
from webapp.ratings.contestants import parse_key, pick_step, run_key, sample_steps, weights_hash
from webapp.ratings.items import Item
from webapp.ratings.models import BASE, RatingSetup, Vote, round_starts, run_rounds
from webapp.ratings.tokens import SESSION_KEY, issue_token

REPEAT_SHARE = 0.1  # share of items that repeat one of the rater's earlier items (consistency)
REPEAT_MIN_VOTES = 5  # a rater's votes at a step before repeats start
REPEAT_NOT_LAST = 3  # never repeat one of the rater's last few items
BASE_LABEL = "Base model"


class Arena:
    """The contestants and prompts of `experiment` as the owner's setup says: by default each finished run
    at its final evaluation, plus the base model; or each run at a fraction of its training, or at a named
    checkpoint. Runs still training take part only when the setup says so. Contestants that are the same
    model are one contestant: a run at step 0 is its starting model (the base model, or the final model of
    the run it starts from), and runs whose final weights hash alike, or whose samples are identical on
    every prompt, are the same model."""

    def __init__(self, experiment: Experiment, step: int | None = None, include_base: bool | None = None):
        self.experiment = experiment
        self.setup = RatingSetup.for_experiment(experiment)
        self.step = 0  # kept for callers; votes carry each contestant's step in its key
        self.steps_by_run = sample_steps(experiment)
        self.include_base = self.setup.include_base if include_base is None else include_base
        self.hold_reveals = self.setup.reveal == RatingSetup.Reveal.AT_END
        self.runs = {run.pk: run for run in experiment.runs.select_related("depends_on")}
        self.rounds = run_rounds(experiment)
        self.round_starts = round_starts(experiment) if self.rounds else {}
        self.base_run = next((r for r in self.runs.values() if r.depends_on_id is None
                              and 0 in self.steps_by_run.get(r.pk, ())), None)
        self.waiting: list[Run] = []  # runs still training, left out until the owner includes them
        # {contestant: (run id, step it shows)}
        candidates: dict[str, tuple[int, int]] = {}
        if self.include_base and self.base_run is not None:
            candidates[BASE] = (self.base_run.pk, 0)
        setup = self.setup
        for run_id, steps in sorted(self.steps_by_run.items()):
            run = self.runs[run_id]
            if run.state != Run.State.SUCCEEDED:
                if run.state == Run.State.RUNNING and setup.include_running:
                    pass
                else:
                    if run.is_active:
                        self.waiting.append(run)
                    continue
            named = (setup.checkpoints or {}).get(str(run_id))
            step_ = pick_step(steps, setup.what, total=run.total or run.config.get("max_steps") or max(steps),
                              fraction=setup.fraction, named=named if isinstance(named, int) else None)
            if step_ is not None:
                candidates[run_key(run_id, step_)] = (run_id, step_)
        self.same_as: dict[str, str] = {}  # contestant left out -> the contestant that is the same model
        self.sources = self._distinct(candidates)

    def final_step(self, run_id: int) -> int | None:
        steps = self.steps_by_run.get(run_id)
        return max(steps) if steps else None

    def identity(self, key: str, source: tuple[int, int]) -> tuple:
        """What model a contestant is, structurally: a run at step 0 is the model it starts from."""
        if key == BASE:
            return ("base",)
        run_id, step = source
        seen = set()
        while step == 0 and run_id not in seen:
            seen.add(run_id)
            run = self.runs.get(run_id)
            parent = run.depends_on_id if run else None
            if parent is None:
                return ("base",)
            final = self.final_step(parent)
            if final is None:
                return ("run", parent, "final")
            run_id, step = parent, final
        return ("run", run_id, step)

    def _distinct(self, candidates: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        """`candidates` less those that are the same model as one kept (base first, then by key)."""
        order = sorted(candidates, key=lambda k: (k != BASE, parse_key(k) or (0, 0)))
        kept: dict[str, tuple[int, int]] = {}
        by_identity: dict[tuple, str] = {}
        by_hash: dict[str, str] = {}
        by_texts: dict[str, str] = {}
        texts = self._fingerprints(candidates)
        for key in order:
            source = candidates[key]
            ident = self.identity(key, source)
            twin = by_identity.get(ident)
            digest = None
            if twin is None and key != BASE and source[1] == self.final_step(source[0]):
                run = self.runs[source[0]]
                if run.state == Run.State.SUCCEEDED:
                    digest = weights_hash(run)
                    twin = by_hash.get(digest) if digest else None
            if twin is None and texts.get(key):
                twin = by_texts.get(texts[key])
            if twin is not None:
                self.same_as[key] = twin
                continue
            kept[key] = source
            by_identity[ident] = key
            if digest:
                by_hash[digest] = key
            if texts.get(key):
                by_texts[texts[key]] = key
        return kept

    def _fingerprints(self, candidates: dict[str, tuple[int, int]]) -> dict[str, str]:
        """A hash of each contestant's samples (prompt, index, completion): equal only for identical outputs."""
        where = Q()
        for run_id, step in candidates.values():
            where |= Q(run_id=run_id, step=step)
        rows: dict[tuple[int, int], list] = {}
        if where:
            for run_id, step, prompt_id, index, text in Sample.objects.filter(where).values_list(
                    "run_id", "step", "prompt_id", "index", "completion").order_by():
                rows.setdefault((run_id, step), []).append((prompt_id, index, text))
        out = {}
        for key, source in candidates.items():
            found = rows.get(source)
            if found:
                out[key] = hashlib.sha256(repr(sorted(found)).encode()).hexdigest()
        return out

    # --- who and what ------------------------------------------------------------------------------

    @property
    def contestants(self) -> list[str]:
        return sorted(self.sources)

    @property
    def labelled(self) -> list[tuple[str, str]]:
        return [(key, self.label(key)) for key in self.contestants]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return list(combinations(self.contestants, 2))

    def label(self, key: str) -> str:
        """What a contestant is: "Base model", "SFT (#12)", "DPO from SFT (#14)", "Round 2: PPO from DPO
        (#31)", with the seed when there are several and, off the final evaluation, where in training."""
        if key == BASE:
            return BASE_LABEL
        parsed = parse_key(key)
        run = self.runs.get(parsed[0]) if parsed else None
        if run is None:
            return f"deleted run {key}"
        name = method_label(run.method)
        parent = self.runs.get(run.depends_on_id) if run.depends_on_id else None
        start = self.round_starts.get(run.pk)
        if start is not None:
            started = self.runs.get(parse_key(start)[0]) if parse_key(start) else None
            name += f" from {method_label(started.method)} #{started.pk}" if started else " from the base model"
        elif parent is not None and parent.method != "reward":
            name += f" from {method_label(parent.method)}"
        if self.experiment.seeds > 1:
            name += f" seed {run.seed}"
        number = self.rounds.get(run.pk)
        if number:
            name = f"Round {number}: {name}"
        step = parsed[1]
        final = self.final_step(run.pk)
        total = run.total or run.config.get("max_steps") or 0
        if final is not None and (step != final or run.state != Run.State.SUCCEEDED):
            where = f"{round(100 * step / total)}% of training" if total else "an earlier evaluation"
            name += f", at {where} (step {step} of {total})" if total else f", at {where}"
        return f"{name} (#{run.pk})"

    def method(self, key: str) -> str:
        if key == BASE:
            return "base"
        parsed = parse_key(key)
        run = self.runs.get(parsed[0]) if parsed else None
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

    def source_of(self, key: str) -> tuple[int, int] | None:
        """(run id, step) a contestant shows, in this setup or (from its key) an earlier one."""
        return self.sources.get(key) or (parse_key(key) if key != BASE else None)

    def rewards(self, keys=None) -> dict[str, float | None]:
        """Each contestant's `eval/reward` at the step it shows (the mean reward of its samples there when
        the metric is missing); `keys`: these contestants (default: this setup's)."""
        sources = {k: s for k in (keys if keys is not None else self.sources) if (s := self.source_of(k))}
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

    def index_for(self, first: str, second: str, prompt_id: int, revealed: set | None = None) -> int | None:
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
        """Votes on the items of this setup: the rater's, the number of items, everyone's."""
        valid, prompts = set(self.pairs), set(self.prompt_ids)
        mine = every = 0
        for first, second, prompt_id, rater_id in Vote.objects.at(self.experiment).values_list(
                "first", "second", "prompt_id", "rater_id").order_by():
            if (first, second) in valid and prompt_id in prompts:
                every += 1
                mine += rater_id == rater.pk
        return {"mine": mine, "items": self.total_items, "all": every}

    def next_item(self, rater, rng: random.Random | None = None, shown: set | None = None) -> Item | None:
        """The next item for `rater`: now and then (REPEAT_SHARE) one of their earlier items again, sides
        drawn anew (a deliberate consistency repeat, marked as one); otherwise the least-voted pair of
        contestants (over all raters; then the pair this rater saw least), on the first prompt of that
        pair's fixed order this rater has not rated yet. An item they voted on is never served again except
        as a repeat; an item served but not voted on (`shown`: (prompt id, first, second), e.g. skipped)
        comes back only once every other unrated item has been served. None when every item is rated."""
        rng = rng or random.SystemRandom()
        if len(self.sources) < 2 or not self.prompt_ids:
            return None
        mine = list(Vote.objects.at(self.experiment).filter(rater=rater).order_by("-updated", "-id")
                    .values_list("first", "second", "prompt_id", "sample_index", "revisions"))
        valid = set(self.pairs)
        prompts = set(self.prompt_ids)
        mine = [m for m in mine if (m[0], m[1]) in valid and m[2] in prompts]
        if len(mine) >= REPEAT_MIN_VOTES and rng.random() < REPEAT_SHARE:
            candidates = mine[REPEAT_NOT_LAST:]
            fresh = [m for m in candidates if m[4] == 0]  # never repeated yet
            if fresh or candidates:
                first, second, prompt_id, index, _ = rng.choice(fresh or candidates)
                return Item(self.step, prompt_id, index, first, second, rng.random() < 0.5, repeat=True)
        done: dict[tuple[str, str], set[int]] = {}
        for first, second, prompt_id, *_ in mine:
            done.setdefault((first, second), set()).add(prompt_id)
        # Reveals after each vote: never show this rater a text a reveal has already attributed.
        revealed = self.revealed_texts(mine) if mine and not self.hold_reveals else None
        counts = {(row["first"], row["second"]): row["n"] for row in Vote.objects.at(self.experiment)
                  .values("first", "second").annotate(n=Count("id")).order_by()}
        pairs = sorted(self.pairs, key=lambda p: (counts.get(p, 0), len(done.get(p, ())), rng.random()))
        shown = shown or set()
        again = None  # the first unrated item already served: only when nothing unserved is left
        for first, second in pairs:
            seen = done.get((first, second), set())
            for prompt_id in self._prompt_order(first, second):
                if prompt_id in seen or (again is not None and (prompt_id, first, second) in shown):
                    continue
                index = self.index_for(first, second, prompt_id, revealed)
                if index is None:
                    continue
                item = Item(self.step, prompt_id, index, first, second, rng.random() < 0.5)
                if (prompt_id, first, second) not in shown:
                    return item
                again = again or item
        return again

    @staticmethod
    def shown_in(session, experiment_id: int) -> set[tuple[int, str, str]]:
        """Items served to this session and not voted on yet (its pending tokens)."""
        return {(e["prompt_id"], e["first"], e["second"]) for e in session.get(SESSION_KEY, {}).values()
                if e.get("experiment") == experiment_id}

    def next_payload(self, rater, session) -> dict:
        """What a rater is shown next (the page's JSON and the API alike): texts by side and an opaque
        token, nothing about who wrote them; or `done` with the reason."""
        if len(self.contestants) < 2:
            return {"done": True, "reason": "Nothing to rate yet: fewer than two models have finished (or been "
                                            "included by the owner) with samples."}
        item = self.next_item(rater, shown=self.shown_in(session, self.experiment.pk))
        progress = self.progress(rater)
        if item is None:
            done = {"done": True, "progress": progress,
                    "reason": "You have rated every item. Thank you!" if progress["mine"] >= progress[
                        "items"] or self.hold_reveals else "You have rated every item you can rate blind (the others would show you texts whose authors you have seen). Thank you!"}
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
        """The authors of everything `rater` voted on in this setup, once they are done (reveals held back)."""
        texts = self.completions
        return [{"prompt_id": prompt_id, "first": self.label(first), "second": self.label(second),
                 "first_text": texts.get((first, prompt_id, index)), "second_text": texts.get((second, prompt_id, index)),
                 "result": Vote.result_of(outcome, left_is_first)}
                for first, second, prompt_id, index, outcome, left_is_first in Vote.objects.at(
                    self.experiment).filter(rater=rater).order_by("id").values_list(
                    "first", "second", "prompt_id", "sample_index", "outcome", "left_is_first")
                if first in self.sources and second in self.sources]

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
