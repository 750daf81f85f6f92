"""The API's rating endpoints: the next blind item, a vote on it, and the leaderboard of the votes."""

from __future__ import annotations

from typing import Literal

from django.http import HttpRequest
from ninja import Query, Status

from webapp.api import schemas
from webapp.api.auth import token_session
from webapp.api.errors import ApiError, not_found
from webapp.api.ninja_api import BAD, ERRORS, api
from webapp.api.params import ID, MAX_INT
from webapp.api.serializers import finite
from webapp.experiments.models import Experiment
from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.leaderboard import BOTH_BAD_CHOICES, as_json, build_leaderboard
from webapp.ratings.models import leaderboard_experiments, raterable_experiments
from webapp.ratings.tokens import redeem_token


def _rating_experiment(request: HttpRequest, pk: int) -> Experiment:
    if not 1 <= pk <= MAX_INT:
        raise not_found("experiment")
    found = raterable_experiments(request.user).select_related("owner").filter(pk=pk).first()
    if found is None:
        raise not_found("experiment")
    return found


@api.get("/experiments/{int:id}/rate/next", response={200: schemas.RateItem, **ERRORS}, url_name="rate_next",
         operation_id="nextRatingItem", summary="The next blind pair to rate (owner or invited rater)",
         tags=["ratings"])
def rate_next(request: HttpRequest, pk: int = ID):
    """The next item to rate, blind: two texts (a, b) and an opaque token to vote with."""
    exp = _rating_experiment(request, pk)
    with token_session(request):
        return Arena(exp).next_payload(request.user, request.session)


@api.post("/experiments/{int:id}/votes", response={201: schemas.VoteResult, 403: schemas.Error,
                                                      409: schemas.Error, **BAD},
          url_name="votes", operation_id="castVote", summary="Vote on an item", tags=["ratings"])
def votes(request: HttpRequest, payload: schemas.NewVote, pk: int = ID):
    exp = _rating_experiment(request, pk)
    with token_session(request):
        item = redeem_token(request.session, exp.pk, payload.token)
    arena = Arena(exp, step=item.step) if item else None
    texts = arena.texts(item) if arena else None
    if texts is None:
        raise ApiError(409, "This item has expired or was already rated; get another one.", "item_expired")
    _vote, created = do_cast_vote(exp, request.user, item, payload.outcome)
    reveal = arena.reveal(item, {**texts, "reward_a": finite(texts["reward_a"]),
                                 "reward_b": finite(texts["reward_b"])})
    return Status(201, {"outcome": payload.outcome, "created": created, "reveal": reveal,
                        "progress": arena.progress(request.user)})


@api.get("/experiments/{int:id}/leaderboard", response={200: schemas.Leaderboard, **BAD}, url_name="leaderboard",
         operation_id="getLeaderboard", summary="Bradley-Terry leaderboard of the human votes", tags=["ratings"])
def leaderboard(request: HttpRequest, pk: int = ID, step: int | None = Query(None, ge=0, le=MAX_INT),
                both_bad: Literal[tuple(BOTH_BAD_CHOICES)] = "tie"):  # type: ignore[valid-type]
    exp = leaderboard_experiments(request.user).select_related("owner").filter(pk=min(pk, MAX_INT + 1)).first()
    if exp is None:
        raise not_found("experiment")
    return as_json(build_leaderboard(exp, step=step, both_bad=both_bad))
