"""Who may see or change an experiment and its runs: the one place every app (pages, reports, the API)
asks. Reading: the owner and the users it is shared with; writing: the owner only. Anyone else gets a
404, as if the object did not exist."""

from __future__ import annotations

from django.http import Http404

from webapp.experiments.models import Experiment, Run


def experiments_for_user(user, write: bool = False):
    """The experiments `user` may see (or, with `write`, change), as a queryset."""
    visible = Experiment.objects.visible_to(user)
    return visible.filter(owner=user) if write else visible


def experiment_for_user(user, pk: int, write: bool = False) -> Experiment:
    """The experiment, with its owner; Http404 if `user` may not see it (or, with `write`, change it)."""
    found = experiments_for_user(user, write).select_related("owner").filter(pk=pk).first()
    if found is None:
        raise Http404("No Experiment matches the given query.")
    return found


def run_for_user(user, pk: int, write: bool = False) -> Run:
    """The run, with its experiment and owner; Http404 if `user` may not see it (or, with `write`, change it)."""
    found = (Run.objects.select_related("experiment", "experiment__owner")
             .filter(pk=pk, experiment__in=experiments_for_user(user, write)).first())
    if found is None:
        raise Http404("No Run matches the given query.")
    return found


def runs_for_user(user, ids: list[int]) -> list[Run]:
    """The runs with these ids, with their experiments; Http404 if `user` may not see every one of them."""
    ids = list(dict.fromkeys(ids))
    runs = list(Run.objects.filter(pk__in=ids, experiment__in=experiments_for_user(user)).select_related("experiment"))
    if len(runs) != len(ids):
        raise Http404("No such run.")
    return runs
