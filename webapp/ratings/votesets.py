"""Votes -> a preference dataset: the (prompt, chosen, rejected) rows an experiment's votes (or several
experiments') say, under the owner's policies for ties, "both are bad" and raters who disagree; each row
lists the votes it comes from. The rows become a Dataset like any other (webapp/datasets), saved as JSONL
(Hugging Face's preference format: prompt, chosen, rejected, plus weight and provenance columns).

A data step (`vote_rows`, plain rows from plain votes) and a write (`do_build_vote_dataset`)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q

from webapp.datasets.actions import do_create_dataset
from webapp.datasets.models import Dataset
from webapp.experiments.models import Experiment, Sample
from webapp.ratings.models import BASE, Vote, VoteDataset

TIES = {"drop": "leave ties out", "both": "keep each tie as two half-weight rows, one each way"}
BOTH_BAD = {"drop": "leave out", "tie": "count as a tie"}
DISAGREE = {"keep": "keep every vote as its own row", "drop": "drop items whose raters disagree",
            "majority": "one row for the majority (an even split is dropped)",
            "weight": "one row each way, weighted by the share of votes"}
HF_COLUMNS = ("prompt", "chosen", "rejected")
# DPO and reward models train on the weight; the other columns (vote_ids, ...) go to reward signals.
MAPPING = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "weight": "weight"}


@dataclass(frozen=True)
class Policy:
    ties: str = "drop"
    both_bad: str = "drop"
    disagree: str = "keep"

    def __post_init__(self):
        for name, choices in (("ties", TIES), ("both_bad", BOTH_BAD), ("disagree", DISAGREE)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: one of {', '.join(choices)}")

    def as_dict(self) -> dict:
        return {"ties": self.ties, "both_bad": self.both_bad, "disagree": self.disagree}


@dataclass
class PlainVote:
    """One vote, as the data step needs it: the item's texts and which was better."""

    id: int
    item: tuple  # (experiment id, prompt id, first, second, sample index)
    prompt: str
    first_text: str
    second_text: str
    result: str  # Vote.FIRST / SECOND / TIE / BOTH_BAD


@dataclass
class Built:
    rows: list[dict] = field(default_factory=list)
    votes: int = 0  # votes read
    used: int = 0  # votes behind at least one row
    dropped: dict = field(default_factory=dict)  # reason -> votes left out


def vote_rows(votes: list[PlainVote], policy: Policy) -> Built:
    """The rows `votes` give under `policy`, in item order. Each row: prompt, chosen, rejected, weight,
    vote_ids (the votes it comes from), experiment, prompt_id, chosen_by and rejected_by (contestant keys)."""
    out = Built(votes=len(votes))
    items: dict[tuple, list[PlainVote]] = {}
    for v in votes:
        items.setdefault(v.item, []).append(v)
    used: set[int] = set()

    def drop(reason: str, n: int) -> None:
        out.dropped[reason] = out.dropped.get(reason, 0) + n

    def row(v: PlainVote, first_better: bool, weight: float, ids: list[int]) -> dict:
        exp_id, prompt_id, first, second, _ = v.item
        chosen, rejected = (v.first_text, v.second_text) if first_better else (v.second_text, v.first_text)
        used.update(ids)
        return {"prompt": v.prompt, "chosen": chosen, "rejected": rejected, "weight": round(weight, 6),
                "vote_ids": sorted(ids), "experiment": exp_id, "prompt_id": prompt_id,
                "chosen_by": first if first_better else second, "rejected_by": second if first_better else first}

    for _key, group in sorted(items.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        firsts = [v for v in group if v.result == Vote.FIRST]
        seconds = [v for v in group if v.result == Vote.SECOND]
        bad = [v for v in group if v.result == Vote.BOTH_BAD]
        ties = [v for v in group if v.result == Vote.TIE] + (bad if policy.both_bad == "tie" else [])
        if policy.both_bad == "drop" and bad:
            drop("both bad", len(bad))
        split = bool(firsts and seconds)  # the raters disagree on which is better
        if split and policy.disagree == "drop":
            drop("raters disagree", len(firsts) + len(seconds) + len(ties))
            continue
        if policy.disagree in ("keep", "drop"):  # every decisive vote is a row of its own
            out.rows += [row(v, True, 1.0, [v.id]) for v in firsts]
            out.rows += [row(v, False, 1.0, [v.id]) for v in seconds]
        elif not split:  # majority or weight, raters agree: one row for all of them
            side = firsts or seconds
            if side:
                out.rows.append(row(side[0], bool(firsts), 1.0, [v.id for v in side]))
        elif policy.disagree == "majority":
            if len(firsts) == len(seconds):
                drop("an even split", len(firsts) + len(seconds))
            else:
                side, first_better = (firsts, True) if len(firsts) > len(seconds) else (seconds, False)
                out.rows.append(row(side[0], first_better, 1.0, [v.id for v in side]))
                drop("outvoted", len(firsts) + len(seconds) - len(side))
        else:  # weight: one row each way, by the share of votes
            n = len(firsts) + len(seconds)
            out.rows.append(row(firsts[0], True, len(firsts) / n, [v.id for v in firsts]))
            out.rows.append(row(seconds[0], False, len(seconds) / n, [v.id for v in seconds]))
        if ties:
            if policy.ties == "both":
                ids = [v.id for v in ties]
                out.rows += [row(ties[0], True, 0.5 * len(ties), ids), row(ties[0], False, 0.5 * len(ties), ids)]
            else:
                drop("ties", len(ties))
    # A pair with an empty answer is no preference a trainer can learn from (and not a valid dataset row).
    empty = [r for r in out.rows if not r["chosen"].strip() or not r["rejected"].strip()]
    if empty:
        drop("an empty answer", sum(len(r["vote_ids"]) for r in empty))
        out.rows = [r for r in out.rows if r not in empty]
        used = {i for r in out.rows for i in r["vote_ids"]}
    out.used = len(used)
    return out


def plain_votes(experiments: list[Experiment], exclude: Q | None = None, judges: bool = False) -> list[PlainVote]:
    """The votes of `experiments` with their items' texts (the sample each side showed): people's, and a
    judge's too when `judges`."""
    found = Vote.objects.filter(experiment__in=experiments)
    if not judges:
        found = found.filter(judge="")
    votes = list(found.exclude(exclude or Q(pk__in=[]))
                 .order_by("id").values_list("id", "experiment_id", "prompt_id", "first", "second", "sample_index",
                                             "outcome", "left_is_first"))
    from webapp.ratings.arena import Arena

    sources: dict[tuple[int, str], tuple[int, int]] = {}
    for exp in experiments:
        arena = Arena(exp, include_base=True)
        for key in {v[3] for v in votes if v[1] == exp.pk} | {v[4] for v in votes if v[1] == exp.pk}:
            source = arena.source_of(key) if key != BASE else (
                (arena.base_run.pk, 0) if arena.base_run else None)
            if source:
                sources[(exp.pk, key)] = source
    where = Q()
    for run_id, step in set(sources.values()):
        where |= Q(run_id=run_id, step=step)
    texts: dict[tuple[int, int, int, int], tuple[str, str]] = {}
    if where:
        for run_id, step, prompt_id, index, prompt, completion in Sample.objects.filter(where).values_list(
                "run_id", "step", "prompt_id", "index", "prompt", "completion").order_by():
            texts[(run_id, step, prompt_id, index)] = (prompt, completion)
    out = []
    for vid, exp_id, prompt_id, first, second, index, outcome, left_is_first in votes:
        a, b = sources.get((exp_id, first)), sources.get((exp_id, second))
        ta = texts.get((*a, prompt_id, index)) if a else None
        tb = texts.get((*b, prompt_id, index)) if b else None
        if ta is None or tb is None:
            continue  # a sample deleted since: nothing to learn from
        out.append(PlainVote(vid, (exp_id, prompt_id, first, second, index), ta[0], ta[1], tb[1],
                             Vote.result_of(outcome, left_is_first)))
    return out


def to_jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, sort_keys=True).encode() + b"\n" for r in rows)


def to_parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def do_build_vote_dataset(owner, experiments: list[Experiment], policy: Policy, name: str = "",
                          exclude: Q | None = None, judges: bool = False) -> VoteDataset:
    """A new version of the vote dataset of `experiments[0]` (from the votes of all of them): the rows saved
    as a Dataset (JSONL, mapped prompt/chosen/rejected/weight), with the policy and the vote count beside it.
    Raises ValueError when the votes give no row."""
    if judges:
        from webapp.ratings.judge import judge_allowed

        refused = [e.name for e in experiments if not judge_allowed(e)]
        if refused:
            raise ValueError(f"the judge's votes are not allowed for {', '.join(refused)}: its agreement with people "
                             "is below the owner's threshold (or not measured)")
    built = vote_rows(plain_votes(experiments, exclude, judges), policy)
    if not built.rows:
        raise ValueError(f"the votes give no preference pair under this policy ({built.votes} votes read"
                         + (", left out: " + ", ".join(f"{n} {why}" for why, n in built.dropped.items())
                            if built.dropped else "") + ")")
    main = experiments[0]
    version = (VoteDataset.objects.filter(experiment=main).order_by("-version").values_list(
        "version", flat=True).first() or 0) + 1
    name = name or f"Votes of {main.name} v{version}"
    dataset = Dataset(owner=owner, name=name[:200], source=Dataset.Source.UPLOAD, mapping=dict(MAPPING))
    upload = ContentFile(to_jsonl(built.rows), name=f"votes-{main.pk}-v{version}.jsonl")
    do_create_dataset(dataset, upload)
    if dataset.mapping != MAPPING:
        from webapp.datasets.actions import do_set_mapping

        do_set_mapping(dataset, dict(MAPPING))
    with transaction.atomic():
        vote_set = VoteDataset.objects.create(experiment=main, version=version, dataset=dataset,
                                              policy={**policy.as_dict(), "judges": judges}, votes=built.used, votes_read=built.votes,
                                              dropped=built.dropped, created_by=owner)
        vote_set.sources.set(experiments)
    return vote_set
