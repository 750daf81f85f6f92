"""The API and the CLI for rounds: build a vote dataset, start the next round, read the rounds."""

from __future__ import annotations

import pytest
from conftest import Api

from ptlab_client.__main__ import main
from webapp.api.models import ApiToken
from webapp.ratings.demo import make_demo_experiment, simulate_votes
from webapp.ratings.models import Round, VoteDataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated(alice, bob, tmp_path):
    exp = make_demo_experiment(alice, name="rated", methods=("sft", "dpo"), prompts=6, steps=(0, 10))
    for run in exp.runs.all():
        run.out_dir = str(tmp_path / f"run{run.pk}")
        run.save(update_fields=["out_dir"])
    simulate_votes(exp, [alice, bob], 40, seed=2)
    return exp


def test_build_a_vote_dataset_start_a_round_and_read_the_rounds(rated, alice, bob):
    api = Api.of(alice)
    url = f"/api/experiments/{rated.pk}"
    r = api.post(f"{url}/vote-datasets", {"ties": "both", "disagree": "majority"})
    assert r.status_code == 201, r.content
    built = r.json()
    assert built["version"] == 1 and built["rows"] > 0 and built["policy"]["ties"] == "both"
    assert api.get(f"{url}/vote-datasets").json()["results"][0]["id"] == built["id"]
    bad = api.post(f"{url}/vote-datasets", {"ties": "maybe", "also": [999999], "judges": "yes"})
    assert bad.status_code == 400 and set(bad.json()["error"]["fields"]) == {"ties", "also", "judges"}
    r = api.post(f"{url}/rounds", {"methods": ["dpo", "ppo"], "vote_dataset": built["id"]})
    assert r.status_code == 201, r.content
    started = r.json()
    assert started["round"] == 2 and sorted(x["method"] for x in started["runs"]) == ["dpo", "ppo", "reward"]
    assert api.post(f"{url}/rounds", {"methods": ["sft"]}).status_code == 400
    assert api.post(f"{url}/rounds", {"picks": ["1@0"]}).status_code in (409, 400)
    rounds = api.get(f"{url}/rounds").json()["rounds"]
    assert [x["number"] for x in rounds] == [1, 2] and rounds[1]["votes_cost"] == built["votes"]
    stranger = Api.of(bob)  # bob rated but is not invited (owner's votes): no access
    for path in (f"{url}/vote-datasets", f"{url}/rounds"):
        assert stranger.get(path).status_code == 404
        assert stranger.post(path, {}).status_code == 404


def test_the_cli_builds_starts_and_lists(rated, alice, live_server, capsys):
    token = ApiToken.issue(alice, "cli")[1]
    base = ["--url", live_server.url, "--token", token]
    assert main([*base, "vote-dataset", str(rated.pk), "--disagree", "drop"]) == 0
    assert "vote dataset" in capsys.readouterr().out
    vote_set = VoteDataset.objects.get(experiment=rated)
    assert vote_set.policy["disagree"] == "drop"
    assert main([*base, "next-round", str(rated.pk), "--methods", "dpo", "--vote-dataset", str(vote_set.pk)]) == 0
    assert "round 2" in capsys.readouterr().out and Round.objects.filter(experiment=rated, number=2).exists()
    assert main([*base, "rounds", str(rated.pk)]) == 0
    out = capsys.readouterr().out
    assert "round 1" in out and "round 2; cost" in out and "Base model" in out
