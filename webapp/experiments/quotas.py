"""The per-user quotas of settings.py (queued runs, new experiments per hour), checked in the same
transaction as the create they allow, with the user's row locked: two creates of one user never both pass a
check that only one of them fits in. Forms check too, earlier, for a friendly error beside the fields."""

from __future__ import annotations

from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from webapp.experiments.models import Experiment, Run


class QuotaExceeded(Exception):
    """A quota refused a create; the message names the limit and the value."""


def lock_owner(user) -> None:
    """Serialise, per user, everything up to the end of the current transaction (call it inside one, first):
    SELECT ... FOR UPDATE of the user's row on PostgreSQL; on SQLite (no row locks) an UPDATE that takes the
    database's write lock (settings make every transaction IMMEDIATE, so it holds that already)."""
    users = get_user_model().objects.filter(pk=user.pk)
    if connection.features.has_select_for_update:
        list(users.select_for_update().values_list("pk", flat=True))
    else:
        pk = users.model._meta.pk.name
        users.update(**{pk: F(pk)})


def rate_refusal(user) -> str | None:
    """PTLAB_MAX_EXPERIMENTS_PER_HOUR (imports count when imported): the refusal's text, or None."""
    most = settings.PTLAB_MAX_EXPERIMENTS_PER_HOUR
    since = timezone.now() - timedelta(hours=1)
    new = Q(created__gte=since)
    if apps.is_installed("webapp.reports"):  # an import keeps its report's date: count when it was imported
        new |= Q(imported_report__created__gte=since)
    recent = Experiment.objects.filter(new, owner=user).distinct().count()
    if recent < most:
        return None
    return (f"At most {most} new experiments per hour (PTLAB_MAX_EXPERIMENTS_PER_HOUR): you created {recent} "
            "in the last hour. Try again later.")


def queued_refusal(user, n_runs: int) -> str | None:
    """PTLAB_MAX_QUEUED_RUNS_PER_USER, for an experiment that adds `n_runs`: the refusal's text, or None."""
    most = settings.PTLAB_MAX_QUEUED_RUNS_PER_USER
    queued = Run.objects.filter(experiment__owner=user, state__in=(Run.State.WAITING, Run.State.QUEUED)).count()
    if queued + n_runs <= most:
        return None
    return (f"At most {most} runs waiting or queued per user (PTLAB_MAX_QUEUED_RUNS_PER_USER): you have "
            f"{queued}, and this experiment adds {n_runs}. Wait for some to start, or cancel some.")


def check_quotas(user, n_runs: int) -> None:
    """Lock the user's quotas for this transaction and raise QuotaExceeded if one more experiment with
    `n_runs` queued runs does not fit."""
    lock_owner(user)
    refused = rate_refusal(user) or (queued_refusal(user, n_runs) if n_runs else None)
    if refused:
        raise QuotaExceeded(refused)
