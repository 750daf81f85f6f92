"""The comparison's chained step axis through the page and its JSON: runs that start from the SFT run's
model begin at its last step; the option shows only where such runs exist."""

from __future__ import annotations

import pytest
from django.urls import reverse

from webapp.compare import loader
from webapp.compare.demo import fill_run
from webapp.experiments.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_cache():
    loader.clear_cache()
    yield
    loader.clear_cache()


def test_chain_places_runs_from_sft_after_it(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "dpo"], rl_from_sft=True, max_steps=40)
    sft, dpo = exp.runs.order_by("id")
    fill_run(sft, steps=60, eval_every=20, prompts=1, per_prompt=1)
    fill_run(dpo, steps=40, eval_every=20, prompts=1, per_prompt=1)
    Run.objects.filter(pk=sft.pk).update(step=60)
    page = alice_client.get(reverse("compare:experiment", args=[exp.pk])).content.decode()
    assert 'id="chain"' in page
    url = reverse("compare:experiment_data", args=[exp.pk])

    def xs(params):
        reward = next(f for f in alice_client.get(url, params).json()["figures"] if f["id"] == "reward")
        return {t["meta"]["run"]: t["x"] for t in reward["figure"]["data"] if t.get("meta", {}).get("kind") == "run"}

    assert xs({})[dpo.pk] == [0, 20, 40]
    assert xs({"chain": "1"})[dpo.pk] == [60, 80, 100] and xs({"chain": "1"})[sft.pk] == [0, 20, 40, 60]
    assert alice_client.get(url, {"chain": "1"}).json()["chain"] is True
    other = make_experiment(alice, name="plain", methods=["sft", "dpo"])
    assert 'id="chain"' not in alice_client.get(reverse("compare:experiment", args=[other.pk])).content.decode()
