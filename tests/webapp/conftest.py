"""Fixtures of the web app's tests. Unit tests never reach a broker: enqueuing is recorded instead
(the integration tests, with a real Redis and a real worker, override `enqueued`)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from webapp.experiments.actions import do_create_experiment
from webapp.experiments.forms.example import example_post_data
from webapp.experiments.models import Experiment


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    """Run ids sent to the broker, as (run_id, queue)."""
    sent = []
    monkeypatch.setattr("webapp.experiments.actions.send_to_workers", lambda run_id, queue, priority=3: sent.append((run_id, queue)))
    return sent


def record_jobs(monkeypatch, task: str) -> list[int]:
    """Ids of the background jobs of `task` sent to their queue (those of other tasks pass on to the next fake)."""
    from webapp.experiments import jobs

    sent, other = [], jobs.send_job
    monkeypatch.setattr(jobs, "send_job", lambda name, queue, job_id: sent.append(job_id) if name == task
                        else other(name, queue, job_id))
    return sent


@pytest.fixture(autouse=True)
def import_jobs_sent(monkeypatch):
    """Ids of report-import jobs sent to the broker (run them with webapp.reports.jobs.do_run_import_job)."""
    return record_jobs(monkeypatch, "webapp.reports.tasks.run_import")


@pytest.fixture(autouse=True)
def upload_jobs_sent(monkeypatch):
    """Ids of dataset-upload jobs sent to the broker (run them with webapp.datasets.jobs.do_run_upload_job)."""
    return record_jobs(monkeypatch, "webapp.datasets.tasks.run_upload")


@pytest.fixture(autouse=True)
def judge_jobs_sent(monkeypatch):
    """Ids of judge jobs sent to the broker (run them with webapp.ratings.judge_jobs.do_run_judge_job)."""
    return record_jobs(monkeypatch, "webapp.ratings.tasks.run_judge_job")


@pytest.fixture(autouse=True)
def artifact_root(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.MEDIA_ROOT = settings.ARTIFACT_ROOT
    return settings.ARTIFACT_ROOT


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(db):
    return User.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def form_data(**overrides) -> dict:
    """The new-experiment form's POST data for its prefilled example, with `overrides` (None removes a key)."""
    data = example_post_data()
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


@pytest.fixture
def make_experiment(db):
    """Create an experiment (and its runs) as the form would; keyword arguments override the example."""

    def make(owner, **fields) -> Experiment:
        values = {"name": "exp", "base_model": "tiny", "task": "arithmetic", "methods": ["sft"], "seeds": 1,
                  "max_steps": 4, "eval_every": 2, "eval_prompts": 2, "eval_samples": 1, "max_new_tokens": 4,
                  "rl_from_sft": False, "queue": "train", "hyperparams": {}}
        values.update(fields)
        return do_create_experiment(Experiment(owner=owner, **values))

    return make


class Api:
    """The JSON API through Django's test client, with a bearer token (None: none at all)."""

    def __init__(self, token: str | None):
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    @classmethod
    def of(cls, user) -> Api:
        """With a new token of `user`."""
        from webapp.api.models import ApiToken

        return cls(ApiToken.issue(user, "tests")[1])

    def get(self, path, **params):
        return self.client.get(path, params, **self.headers)

    def post(self, path, body=None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(body or {})
        return self.client.post(path, data, content_type="application/json", **self.headers)


@pytest.fixture
def api(alice):
    return Api.of(alice)


@pytest.fixture
def bob_api(bob):
    return Api.of(bob)


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: a real Redis and real Celery worker processes (slow)")
