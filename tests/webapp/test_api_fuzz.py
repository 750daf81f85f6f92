"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis), in process against
the WSGI app with a real token: no 500s, and every response matches the schema (status codes, content
types, bodies). Path ids are mapped onto existing objects (alice's, bob's, none) so the happy paths and
the 404s are both exercised."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from webapp.api.models import ApiToken
from webapp.ratings.demo import make_demo_experiment
from webapp.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def keep_connection():
    """The WSGI handler closes the database connection after each request; the test's transaction
    (and SQLite's in-memory database) must survive, as under Django's test client."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token_and_ids(keep_connection, db, alice, bob, make_experiment):
    mine = make_demo_experiment(alice, prompts=2, samples=1)
    queued = make_experiment(alice, methods=["sft", "dpo"])
    theirs = make_experiment(bob)
    swept = make_experiment(alice, methods=["dpo"], sweep={"trials": 2})
    exp_ids = [mine.pk, queued.pk, theirs.pk, swept.pk, 10**6]
    run_ids = [*mine.runs.values_list("pk", flat=True), *queued.runs.values_list("pk", flat=True),
               *theirs.runs.values_list("pk", flat=True), *swept.runs.values_list("pk", flat=True), 10**6]
    return ApiToken.issue(alice, "fuzz")[1], exp_ids, run_ids


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, token_and_ids):
    token, exp_ids, run_ids = token_and_ids
    if case.path_parameters and "id" in case.path_parameters and isinstance(case.path_parameters["id"], int):
        ids = run_ids if case.path.startswith("/api/runs/") else exp_ids
        case.path_parameters["id"] = ids[case.path_parameters["id"] % len(ids)]
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
