"""Votes -> a preference dataset: the rows match the votes under each policy (ties, both bad, raters who
disagree), each row lists its votes, and the dataset is a Dataset like any other (JSONL, Parquet, DPO)."""

from __future__ import annotations

import io
import json

import pytest

from training.tasks import DatasetTask
from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.items import Item
from webapp.ratings.models import Vote, VoteDataset
from webapp.ratings.votesets import PlainVote, Policy, do_build_vote_dataset, to_parquet, vote_rows

F, S, T, B = Vote.FIRST, Vote.SECOND, Vote.TIE, Vote.BOTH_BAD


def votes(*results_by_item: tuple[str, ...]) -> list[PlainVote]:
    """Item n: prompt "p<n>", first text "x<n>", second text "y<n>"; one vote per result."""
    out, vid = [], 0
    for n, results in enumerate(results_by_item):
        for r in results:
            vid += 1
            out.append(PlainVote(vid, (1, n, "1@9", "2@9", 0), f"p{n}", f"x{n}", f"y{n}", r))
    return out


def pairs(built) -> list[tuple]:
    return [(r["prompt"], r["chosen"], r["rejected"], r["weight"], tuple(r["vote_ids"])) for r in built.rows]


def test_agreeing_votes_are_one_row_each_and_name_their_vote():
    built = vote_rows(votes((F,), (S, S)), Policy())
    assert pairs(built) == [("p0", "x0", "y0", 1.0, (1,)), ("p1", "y1", "x1", 1.0, (2,)), ("p1", "y1", "x1", 1.0, (3,))]
    assert built.rows[0]["chosen_by"] == "1@9" and built.rows[1]["chosen_by"] == "2@9"
    assert built.used == 3 and built.dropped == {}


def test_ties_dropped_or_kept_as_two_half_rows():
    assert pairs(vote_rows(votes((T,), (F,)), Policy(ties="drop"))) == [("p1", "x1", "y1", 1.0, (2,))]
    assert vote_rows(votes((T,), (F,)), Policy(ties="drop")).dropped == {"ties": 1}
    assert pairs(vote_rows(votes((T,)), Policy(ties="both"))) == [("p0", "x0", "y0", 0.5, (1,)),
                                                                   ("p0", "y0", "x0", 0.5, (1,))]


def test_both_bad_dropped_or_a_tie():
    assert vote_rows(votes((B,)), Policy(both_bad="drop", ties="both")).rows == []
    assert vote_rows(votes((B,)), Policy(both_bad="drop")).dropped == {"both bad": 1}
    assert len(vote_rows(votes((B,)), Policy(both_bad="tie", ties="both")).rows) == 2
    assert vote_rows(votes((B,)), Policy(both_bad="tie", ties="drop")).dropped == {"ties": 1}


def test_disagreeing_raters_kept_dropped_majority_or_weighted():
    v = votes((F, F, S), (F,))
    assert pairs(vote_rows(v, Policy(disagree="keep"))) == [
        ("p0", "x0", "y0", 1.0, (1,)), ("p0", "x0", "y0", 1.0, (2,)), ("p0", "y0", "x0", 1.0, (3,)),
        ("p1", "x1", "y1", 1.0, (4,))]
    dropped = vote_rows(v, Policy(disagree="drop"))
    assert pairs(dropped) == [("p1", "x1", "y1", 1.0, (4,))] and dropped.dropped == {"raters disagree": 3}
    majority = vote_rows(v, Policy(disagree="majority"))
    assert pairs(majority) == [("p0", "x0", "y0", 1.0, (1, 2)), ("p1", "x1", "y1", 1.0, (4,))]
    assert majority.dropped == {"outvoted": 1}
    assert vote_rows(votes((F, S)), Policy(disagree="majority")).rows == []
    weighted = vote_rows(v, Policy(disagree="weight"))
    assert pairs(weighted) == [("p0", "x0", "y0", 0.666667, (1, 2)), ("p0", "y0", "x0", 0.333333, (3,)),
                               ("p1", "x1", "y1", 1.0, (4,))]


def test_a_policy_refuses_unknown_choices():
    with pytest.raises(ValueError):
        Policy(ties="maybe")


@pytest.mark.django_db
def test_an_experiments_votes_become_a_versioned_dataset_like_any_other(alice, bob):
    exp = make_demo_experiment(alice, methods=("sft", "dpo"), prompts=6, steps=(0, 10))
    arena = Arena(exp)
    cast = []
    for prompt_id in arena.prompt_ids:
        for first, second in arena.pairs:
            item = Item(0, prompt_id, 0, first, second, True)
            do_cast_vote(exp, alice, item, "a")
            cast.append(Vote.objects.get(rater=alice, prompt_id=prompt_id, first=first, second=second))
    do_cast_vote(exp, bob, Item(0, 0, 0, *arena.pairs[0], False), "a")  # bob disagrees with alice on one item
    vote_set = do_build_vote_dataset(alice, [exp], Policy(disagree="drop"))
    assert (vote_set.version, vote_set.votes, vote_set.dropped) == (1, len(cast) - 1, {"raters disagree": 2})
    dataset = vote_set.dataset
    assert dataset.owner == alice
    assert dataset.mapping == {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "weight": "weight"}
    assert set(dataset.methods()) >= {"dpo", "reward"}
    task = DatasetTask(dataset.spec())
    assert len(task.examples()) == len(cast) - 1 and task.hash == dataset.content_hash
    rows = [json.loads(line) for line in open(dataset.location(), encoding="utf-8")]
    by_id = {v.pk: v for v in cast}
    for row in rows:  # each row is the vote it names: alice preferred the first (left) contestant's text
        (vid,) = row["vote_ids"]
        vote = by_id[vid]
        assert (row["chosen_by"], row["rejected_by"]) == (vote.first, vote.second)
        assert row["chosen"] == arena.completions[(vote.first, vote.prompt_id, 0)]
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(to_parquet(rows)))
    assert table.num_rows == len(rows) and {"prompt", "chosen", "rejected"} <= set(table.column_names)
    again = do_build_vote_dataset(alice, [exp], Policy())
    assert again.version == 2 and VoteDataset.objects.filter(experiment=exp).count() == 2


def test_a_pair_with_an_empty_answer_is_dropped_not_a_bad_dataset_row():
    good = PlainVote(1, (1, 0, "1@9", "2@9", 0), "p0", "a long answer", "short", F)
    empty = PlainVote(2, (1, 1, "1@9", "2@9", 0), "p1", "an answer", "  ", F)
    built = vote_rows([good, empty], Policy())
    assert [r["vote_ids"] for r in built.rows] == [[1]]
    assert built.dropped == {"an empty answer": 1} and built.used == 1
