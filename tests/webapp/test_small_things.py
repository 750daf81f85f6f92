"""The small things of issue 19: the API docs point to the real token page, a favicon, cancel forms ask
first, queued runs show their place (pages, status JSON, API), `ptlab_client follow` rides over a server
restart and shows queue places."""

from __future__ import annotations

import io

import pytest
from django.urls import resolve, reverse

from ptlab_client.__main__ import follow, progress_bar, status_lines
from ptlab_client.client import ApiError
from webapp.experiments.models import Run

pytestmark = pytest.mark.django_db


def test_api_docs_link_to_the_token_page_that_exists(alice_client):
    html = alice_client.get(reverse("api:docs")).content.decode()
    assert f'href="{reverse("api:tokens")}"' in html
    description = alice_client.get(reverse("api:schema")).json()["info"]["description"]
    assert "/accounts/tokens/" in description and "/api/tokens/" not in description
    assert resolve("/accounts/tokens/").url_name == "tokens"


def test_favicon(alice_client):
    html = alice_client.get(reverse("experiments:list")).content.decode()
    assert 'rel="icon" href="/static/favicon.svg"' in html
    response = alice_client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"


def test_cancel_forms_ask_first(alice_client, alice, make_experiment):
    exp = make_experiment(alice, methods=["sft", "dpo"])
    page = alice_client.get(exp.get_absolute_url()).content.decode()
    assert page.count("data-confirm=") == 3  # cancel all, and each run's cancel
    run_page = alice_client.get(exp.runs.first().get_absolute_url()).content.decode()
    assert "data-confirm=" in run_page


def test_queue_places_on_the_experiment_page_its_status_and_the_api(alice_client, alice, make_experiment):
    first = make_experiment(alice, name="first", methods=["sft", "dpo"])
    second = make_experiment(alice, name="second", methods=["sft"])
    Run.objects.filter(pk=first.runs.order_by("id").first().pk).update(state=Run.State.RUNNING)
    html = alice_client.get(second.get_absolute_url()).content.decode()
    assert "place 2 in the queue" in html
    status = alice_client.get(reverse("experiments:status", args=[first.pk])).json()
    assert [r["queue_position"] for r in status["runs"]] == [None, 1]
    from webapp.api.serializers import experiment_data

    data = experiment_data(second, list(second.runs.all()))
    assert data["runs"][0]["queue_position"] == 2


class FlakyClient:
    """Answers like a server that restarts: a few transport failures between good answers."""

    def __init__(self, answers):
        self.answers = list(answers)

    def experiment(self, pk):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def exp_with(*runs):
    return {"id": 1, "name": "x", "state": "running", "runs": [
        {"id": i, "label": f"r{i}", "state": s, "step": 1, "total": 4, "queue_position": q,
         "latest": {"reward": None, "kl": None}} for i, (s, q) in enumerate(runs)]}


def test_follow_rides_over_a_server_restart_and_shows_queue_places():
    down = ApiError(0, "unreachable", "Connection refused")
    answers = [exp_with(("running", None), ("queued", 1), ("queued", 2)), down, ApiError(502, "http_error", "bad gw"),
               down, exp_with(("succeeded", None), ("running", None), ("queued", 1)),
               exp_with(("succeeded", None), ("succeeded", None), ("succeeded", None))]
    out, slept = io.StringIO(), []
    done = follow(FlakyClient(answers), 1, interval=1.0, out=out, sleep=slept.append, clock=lambda: 0.0)
    assert all(r["state"] == "succeeded" for r in done["runs"])
    text = out.getvalue()
    assert "queued: #1, #2 in line" in text and "server unreachable (Connection refused)" in text
    assert text.count("server unreachable") == 3 and "server back" in text
    assert "#1 in line" in "\n".join(status_lines(exp_with(("queued", 1))))
    assert "queued" not in progress_bar(exp_with(("running", None)))


def test_follow_gives_up_after_a_long_outage_and_never_retries_real_errors():
    down = ApiError(0, "unreachable", "Connection refused")
    clock = iter([0.0, 100.0, 700.0])
    with pytest.raises(ApiError):
        follow(FlakyClient([down, down, down]), 1, out=io.StringIO(), sleep=lambda s: None,
               clock=lambda: next(clock), give_up_after=600)
    with pytest.raises(ApiError) as e:
        follow(FlakyClient([ApiError(404, "not_found", "no")]), 1, out=io.StringIO(), sleep=lambda s: None)
    assert e.value.status == 404
