"""Writes of the ratings app (`do_*`), each under one transaction."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from webapp.experiments.models import Experiment
from webapp.ratings.items import Item
from webapp.ratings.models import Invitation, Vote


def do_cast_vote(experiment: Experiment, rater, item: Item, outcome: str) -> tuple[Vote, bool]:
    """Record `rater`'s vote on `item`; returns (vote, created). A vote on an item the rater has already
    rated replaces it (one row per rater and item) and keeps the replaced result for consistency. Raters
    never contend for a row; the same rater's two concurrent votes on one item leave one row, the later."""
    if outcome not in Vote.Outcome.values:
        raise ValueError(f"unknown outcome {outcome!r}")
    key = {"experiment": experiment, "rater": rater, "step": item.step, "prompt_id": item.prompt_id,
           "first": item.first, "second": item.second}
    with transaction.atomic():
        vote = Vote.objects.select_for_update().filter(**key).first()
        if vote is None:
            try:
                with transaction.atomic():  # a savepoint: losing the race below leaves the outer transaction usable
                    vote = Vote.objects.create(**key, sample_index=item.index, left_is_first=item.left_is_first,
                                               outcome=outcome)
                return vote, True
            except IntegrityError:
                vote = Vote.objects.select_for_update().get(**key)
        vote.previous_result = vote.result
        vote.revisions += 1
        vote.outcome, vote.left_is_first, vote.sample_index = outcome, item.left_is_first, item.index
        vote.save(update_fields=["previous_result", "revisions", "outcome", "left_is_first", "sample_index",
                                 "updated"])
        return vote, False


def do_invite(experiment: Experiment, rater, by) -> tuple[Invitation, bool]:
    """Invite `rater` to rate `experiment` (idempotent)."""
    with transaction.atomic():
        return Invitation.objects.get_or_create(experiment=experiment, rater=rater, defaults={"invited_by": by})
