"""Login everywhere, owners only (404 for others), shared experiments read-only, CSRF on every POST."""

import pytest
from django.test import Client
from django.urls import reverse

from webapp.experiments.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def exp(alice, make_experiment):
    return make_experiment(alice, name="alice's")


def pages(exp):
    run = exp.runs.first()
    return [
        reverse("experiments:list"), reverse("experiments:new"), reverse("experiments:workers"),
        reverse("experiments:detail", args=[exp.pk]), reverse("experiments:status", args=[exp.pk]),
        reverse("experiments:clone", args=[exp.pk]), reverse("experiments:run", args=[run.pk]),
    ]


def test_every_page_requires_login(client, exp):
    for url in pages(exp):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


def test_posts_require_login(client, exp):
    run = exp.runs.first()
    for url in (reverse("experiments:cancel", args=[exp.pk]), reverse("experiments:run_cancel", args=[run.pk])):
        assert client.post(url)["Location"].startswith(reverse("login"))
    assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED


def test_login_page_and_login(client, alice):
    assert client.get(reverse("login")).status_code == 200
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302
    assert client.get(reverse("experiments:list")).status_code == 200


def test_another_users_experiment_is_404(client, bob, exp):
    client.force_login(bob)
    run = exp.runs.first()
    for url in pages(exp)[3:]:
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("experiments:cancel", args=[exp.pk])).status_code == 404
    assert client.post(reverse("experiments:run_cancel", args=[run.pk])).status_code == 404
    assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED
    assert "alice&#x27;s" not in client.get(reverse("experiments:list")).content.decode()


def test_shared_experiment_is_visible_read_only(client, bob, exp):
    exp.shared_with.add(bob)
    client.force_login(bob)
    for url in pages(exp):
        assert client.get(url).status_code == 200, url
    page = client.get(reverse("experiments:detail", args=[exp.pk])).content.decode()
    assert "read-only" in page and "Cancel run" not in page
    run = exp.runs.first()
    assert client.post(reverse("experiments:run_cancel", args=[run.pk])).status_code == 404
    assert client.post(reverse("experiments:cancel", args=[exp.pk])).status_code == 404
    assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED
    assert "alice" in client.get(reverse("experiments:list")).content.decode()


def test_post_without_csrf_token_is_refused(alice, exp):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    run = exp.runs.first()
    assert client.post(reverse("experiments:run_cancel", args=[run.pk])).status_code == 403
    assert client.post(reverse("experiments:cancel", args=[exp.pk])).status_code == 403
    assert client.post(reverse("experiments:new"), {"name": "x"}).status_code == 403
    assert client.post(reverse("logout")).status_code == 403
    assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED


def test_post_with_csrf_token_is_accepted(alice, exp):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get(reverse("experiments:detail", args=[exp.pk]))  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    run = exp.runs.first()
    response = client.post(reverse("experiments:run_cancel", args=[run.pk]), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Run.objects.get(pk=run.pk).state == Run.State.CANCELLED


def test_changes_only_by_post(alice_client, exp):
    run = exp.runs.first()
    assert alice_client.get(reverse("experiments:cancel", args=[exp.pk])).status_code == 405
    assert alice_client.get(reverse("experiments:run_cancel", args=[run.pk])).status_code == 405


def test_admin_is_for_staff(alice_client, alice):
    assert alice_client.get("/admin/").status_code == 302
    alice.is_staff = alice.is_superuser = True
    alice.save()
    assert alice_client.get("/admin/").status_code == 200
    assert alice_client.get("/admin/experiments/run/").status_code == 200
