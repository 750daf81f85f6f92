"""The API's side of rating rounds: build a vote dataset, list them, start the next round, read the rounds.
Thin like the other endpoints: the owner writes, whoever sees the leaderboard reads; logic in
webapp.ratings (votesets, rounds)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Body, Status

from training.tasks import DatasetError
from webapp.api import schemas
from webapp.api.errors import ApiError, not_found
from webapp.api.ninja_api import BAD, ERRORS, api
from webapp.api.params import ID
from webapp.experiments.access import experiment_for_user
from webapp.experiments.models import Experiment
from webapp.ratings.models import VoteDataset, leaderboard_experiments
from webapp.ratings.rounds import RL_METHODS, RoundError, do_start_round, rounds_summary
from webapp.ratings.votesets import BOTH_BAD, DISAGREE, TIES, Policy, do_build_vote_dataset

BODY = Body(default_factory=dict)  # a JSON object; left out: {}


def _own(request: HttpRequest, pk: int) -> Experiment:
    from django.http import Http404

    try:
        return experiment_for_user(request.user, pk, write=True)
    except Http404:
        raise not_found("experiment") from None


def _readable(request: HttpRequest, pk: int) -> Experiment:
    found = leaderboard_experiments(request.user).filter(pk=pk).first()
    if found is None:
        raise not_found("experiment")
    return found


def vote_dataset_data(v: VoteDataset) -> dict:
    return {"id": v.pk, "experiment": v.experiment_id, "version": v.version, "dataset": v.dataset_id,
            "name": v.dataset.name, "content_hash": v.dataset.content_hash, "rows": v.dataset.rows,
            "votes": v.votes, "votes_read": v.votes_read, "dropped": v.dropped, "policy": v.policy,
            "sources": sorted(e.pk for e in v.sources.all()), "created": v.created.isoformat(),
            "files": {fmt: f"/vote-datasets/{v.pk}.{fmt}" for fmt in ("jsonl", "parquet")}}


@api.get("/experiments/{int:id}/vote-datasets", response={200: dict[str, Any], **ERRORS}, url_name="vote_datasets",
         operation_id="listVoteDatasets", summary="Versions of the experiment's vote dataset (owner)", tags=["ratings"])
def vote_datasets(request: HttpRequest, pk: int = ID):
    exp = _own(request, pk)
    return {"results": [vote_dataset_data(v) for v in exp.vote_datasets.select_related("dataset")
                        .prefetch_related("sources")]}


@api.post("/experiments/{int:id}/vote-datasets", response={201: dict[str, Any], 409: schemas.Error, **BAD},
          operation_id="buildVoteDataset", tags=["ratings"],
          summary="Build a new version of the vote dataset from the votes (owner): ties (drop|both), both_bad "
                  "(drop|tie), disagree (keep|drop|majority|weight), also (other experiment ids), name, judges")
def build_vote_dataset(request: HttpRequest, pk: int = ID, body: dict[str, Any] = BODY):
    exp = _own(request, pk)
    fields: dict = {}
    choices = {"ties": TIES, "both_bad": BOTH_BAD, "disagree": DISAGREE}
    policy = {}
    for name, allowed in choices.items():
        value = body.get(name, Policy.__dataclass_fields__[name].default)
        if value not in allowed:
            fields[name] = [f"One of: {', '.join(allowed)}."]
        policy[name] = value
    also = body.get("also", [])
    if not isinstance(also, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in also):
        fields["also"] = ["A list of experiment ids."]
        also = []
    others = list(Experiment.objects.filter(owner=request.user, pk__in=also))
    if len(others) != len(set(also)):
        fields["also"] = ["Name only experiments you own."]
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        fields["name"] = ["Text, at most 200 characters."]
    judges = body.get("judges", False)
    if not isinstance(judges, bool):
        fields["judges"] = ["true or false: include the judges' votes (only above the owner's threshold)."]
    if fields:
        raise ApiError(400, "The vote dataset cannot be built.", "validation_error", fields)
    try:
        built = do_build_vote_dataset(request.user, [exp, *others], Policy(**policy), name=name, judges=judges)
    except (ValueError, DatasetError) as e:
        raise ApiError(409, f"No dataset: {e}", "no_pairs") from None
    return Status(201, vote_dataset_data(built))


@api.get("/experiments/{int:id}/rounds", response={200: dict[str, Any], **ERRORS}, url_name="rounds",
         operation_id="listRounds", tags=["ratings"],
         summary="Round by round: runs, gold reward, KL, reward model accuracy on held-out votes, votes cost")
def rounds(request: HttpRequest, pk: int = ID):
    return {"rounds": rounds_summary(_readable(request, pk))}


@api.post("/experiments/{int:id}/rounds", response={201: dict[str, Any], 409: schemas.Error, **BAD},
          operation_id="startRound", tags=["ratings"],
          summary="Start the next round (owner): picks (contestant keys; default the leader), methods (ppo, grpo, "
                  "rloo, dpo), vote_dataset (id; default a new version)")
def start_round(request: HttpRequest, pk: int = ID, body: dict[str, Any] = BODY):
    exp = _own(request, pk)
    fields: dict = {}
    picks = body.get("picks") or None
    if picks is not None and (not isinstance(picks, list) or not all(isinstance(p, str) for p in picks)):
        fields["picks"] = ["A list of contestant keys (\"base\" or \"<run id>@<step>\")."]
    methods = body.get("methods", ["ppo", "dpo"])
    if not isinstance(methods, list) or not methods or not set(methods) <= {*RL_METHODS, "dpo"}:
        fields["methods"] = [f"A list of: {', '.join((*RL_METHODS, 'dpo'))}."]
    vote_dataset = body.get("vote_dataset")
    if vote_dataset is not None and (not isinstance(vote_dataset, int) or isinstance(vote_dataset, bool)):
        fields["vote_dataset"] = ["The id of one of this experiment's vote datasets."]
    if fields:
        raise ApiError(400, "The round cannot be started.", "validation_error", fields)
    try:
        vote_set = (exp.vote_datasets.filter(pk=vote_dataset).first() if vote_dataset is not None
                    else do_build_vote_dataset(request.user, [exp], Policy()))
        if vote_set is None:
            raise ApiError(400, "The round cannot be started.", "validation_error",
                           {"vote_dataset": ["Not a vote dataset of this experiment."]})
        round_ = do_start_round(exp, vote_set, picks=picks, methods=tuple(methods), by=request.user)
    except (RoundError, ValueError, DatasetError) as e:
        raise ApiError(409, f"Could not start the round: {e}", "round_refused") from None
    return Status(201, {"round": round_.number, "vote_dataset": vote_set.pk, "started_from": round_.started_from,
                        "runs": [{"id": r.pk, "method": r.method, "state": r.state, "depends_on": r.depends_on_id}
                                 for r in round_.runs.order_by("id")]})
