"""A run sent again (requeued, resumed) goes ahead of the runs queued after it first was: checked on a real
Redis, in the order a worker's consumer would take the messages."""

from __future__ import annotations

import uuid

import pytest

from tests.celery_broker import celery_app_on
from tests.webapp.test_integration import redis_url  # noqa: F401  (the real Redis fixture)
from webapp.experiments.actions import AHEAD_PRIORITY, FIRST_PRIORITY, send_to_workers

pytestmark = pytest.mark.integration


def test_a_requeued_run_is_taken_before_runs_queued_after_it(redis_url):  # noqa: F811
    from webapp.celery import app

    queue = f"order-{uuid.uuid4().hex[:8]}"
    with celery_app_on(redis_url):
        send_to_workers(1, queue, FIRST_PRIORITY)
        send_to_workers(2, queue, FIRST_PRIORITY)
        send_to_workers(3, queue, AHEAD_PRIORITY)  # run 3 was requeued after runs 1 and 2 were queued
        taken = []
        with app.connection_for_read() as conn:
            channel = conn.default_channel
            channel.queue_declare(queue=queue, passive=False)
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                args, _kwargs, _embed = message.decode()
                taken.append(args[0])
    assert taken == [3, 1, 2]
