"""webapp.experiments.access: the owner reads and writes, users it is shared with only read, anyone else
gets a 404, for experiments, runs and picked runs alike."""

import pytest
from django.http import Http404

from webapp.experiments.access import experiment_for_user, experiments_for_user, run_for_user, runs_for_user

pytestmark = pytest.mark.django_db


def test_read_and_write(alice, bob, make_experiment, django_user_model):
    carol = django_user_model.objects.create_user("carol", password="pw-carol-123")
    exp = make_experiment(alice)
    exp.shared_with.add(bob)
    run = exp.runs.get()
    assert experiment_for_user(alice, exp.pk, write=True) == exp and run_for_user(alice, run.pk, write=True) == run
    assert experiment_for_user(bob, exp.pk) == exp and run_for_user(bob, run.pk) == run
    for user, write in ((bob, True), (carol, False), (carol, True)):
        with pytest.raises(Http404):
            experiment_for_user(user, exp.pk, write=write)
        with pytest.raises(Http404):
            run_for_user(user, run.pk, write=write)
    assert list(experiments_for_user(bob)) == [exp] and not experiments_for_user(bob, write=True).exists()


def test_picked_runs_are_all_visible_or_none(alice, bob, make_experiment):
    mine, theirs = make_experiment(alice), make_experiment(bob)
    assert runs_for_user(alice, [mine.runs.get().pk, mine.runs.get().pk]) == [mine.runs.get()]
    with pytest.raises(Http404):
        runs_for_user(alice, [mine.runs.get().pk, theirs.runs.get().pk])
    with pytest.raises(Http404):
        runs_for_user(alice, [10**9])
    assert runs_for_user(alice, []) == []
