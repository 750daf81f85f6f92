"""Votes sent at the same moment, from threads with their own database connections, against the real
test database (a SQLite file, or PostgreSQL on CI): two raters' votes are all kept; one rater's two
votes on one item leave one row."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.test import Client
from django.urls import reverse

from webapp.ratings.actions import do_cast_vote
from webapp.ratings.arena import Arena
from webapp.ratings.demo import make_demo_experiment
from webapp.ratings.items import Item
from webapp.ratings.models import Invitation, Vote
from webapp.ratings.tokens import issue_token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def run_together(jobs):
    """Run callables in threads released at once by a barrier; re-raise the first error."""
    barrier = threading.Barrier(len(jobs))
    errors = []

    def wrap(job):
        try:
            barrier.wait()
            job()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


@pytest.fixture
def setup():
    if connection.vendor == "sqlite" and ":memory:" in str(connection.settings_dict["NAME"]):
        pytest.skip("threads need a file database")
    owner = User.objects.create_user("owner")
    raters = [User.objects.create_user(f"rater{k}") for k in range(2)]
    exp = make_demo_experiment(owner, prompts=4, steps=(0, 10))
    for r in raters:
        Invitation.objects.create(experiment=exp, rater=r)
    return exp, raters


def test_two_raters_voting_at_once_on_the_same_items_are_all_kept(setup):
    exp, raters = setup
    arena = Arena(exp)
    items = [Item(arena.step, p, 0, a, b, True) for a, b in arena.pairs[:3] for p in arena.prompt_ids]

    def votes_of(user, outcome):
        return lambda: [do_cast_vote(exp, user, item, outcome) for item in items]

    run_together([votes_of(raters[0], "a"), votes_of(raters[1], "b")])
    assert Vote.objects.filter(rater=raters[0], outcome="a").count() == len(items)
    assert Vote.objects.filter(rater=raters[1], outcome="b").count() == len(items)


def test_two_raters_voting_at_once_over_http_are_all_kept(setup):
    exp, raters = setup
    clients = []
    for user in raters:
        client = Client()
        client.force_login(user)
        clients.append(client)
    rounds = 8

    def rate(client):
        def job():
            for _ in range(rounds):
                token = client.get(reverse("ratings:next", args=[exp.pk])).json()["token"]
                response = client.post(reverse("ratings:vote", args=[exp.pk]), {"token": token, "outcome": "tie"})
                assert response.status_code == 200, response.content
        return job

    run_together([rate(c) for c in clients])
    for user in raters:
        votes = Vote.objects.filter(rater=user)
        assert votes.count() + sum(v.revisions for v in votes) == rounds


def test_one_raters_simultaneous_votes_on_one_item_leave_one_row(setup):
    exp, raters = setup
    arena = Arena(exp)
    first, second = arena.pairs[0]
    item = Item(arena.step, arena.prompt_ids[0], 0, first, second, True)
    run_together([lambda: do_cast_vote(exp, raters[0], item, "a"), lambda: do_cast_vote(exp, raters[0], item, "b"),
                  lambda: do_cast_vote(exp, raters[0], item, "tie")])
    vote = Vote.objects.get(rater=raters[0])
    assert vote.revisions == 2


def test_issue_token_is_per_session(setup):
    exp, raters = setup
    arena = Arena(exp)
    first, second = arena.pairs[0]
    client = Client()
    client.force_login(raters[0])
    session = client.session
    token = issue_token(session, exp.pk, Item(arena.step, 0, 0, first, second, False))
    session.save()
    other = Client()
    other.force_login(raters[1])
    assert other.post(reverse("ratings:vote", args=[exp.pk]), {"token": token, "outcome": "a"}).status_code == 409
    assert client.post(reverse("ratings:vote", args=[exp.pk]), {"token": token, "outcome": "a"}).status_code == 200


def test_one_token_posted_eight_times_at_once_is_accepted_once(setup):
    """The probe's replay race: the session holds the item until it is saved, so every concurrent request
    found it; the database's one-time insert now lets exactly one through."""
    exp, raters = setup
    client = Client()
    client.force_login(raters[0])
    token = client.get(reverse("ratings:next", args=[exp.pk])).json()["token"]
    statuses = []

    def post():
        c = Client()
        c.cookies = client.cookies  # the same browser session
        statuses.append(c.post(reverse("ratings:vote", args=[exp.pk]), {"token": token, "outcome": "a"}).status_code)

    run_together([post] * 8)
    assert sorted(statuses) == [200] + [409] * 7, statuses
    vote = Vote.objects.get(rater=raters[0])
    assert vote.revisions == 0 and vote.previous_result == ""
