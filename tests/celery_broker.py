"""This test process's Celery app pointed at a test Redis: shared by the integration fixtures
(tests/webapp/test_integration.py) and the browser fixtures (tests/e2e/conftest.py)."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def celery_app_on(url: str):
    """Point this process's Celery app (the live server enqueues through it) and CELERY_BROKER_URL (the
    workers page asks it for queue lengths) at `url`, and put both back afterwards: tests of other modules
    must not publish to this Redis database."""
    from django.conf import settings

    from webapp.celery import app

    old = settings.CELERY_BROKER_URL, app.conf.broker_url
    settings.CELERY_BROKER_URL = app.conf.broker_url = url
    forget_connections(app)
    try:
        yield url
    finally:
        settings.CELERY_BROKER_URL, app.conf.broker_url = old
        forget_connections(app)


def forget_connections(app) -> None:
    """Close and forget the app's broker connection pool and producer pool, built for the old broker_url,
    as Celery and kombu do after a fork. Not `app.close()`: it keeps the producer pool, which would go on
    publishing to the old broker. Not only `app._pool.force_close_all()`: kombu keeps its pools in
    registries keyed by the connection's URL, and the next module to use that URL would get the closed
    pool back ("Acquire on closed pool")."""
    from kombu import pools

    pools.reset()  # closes every pool and empties kombu's registries
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None
