from django.urls import path, re_path

from webapp.api import pages, rounds, views

app_name = "api"
urlpatterns = [
    path("accounts/tokens/", pages.tokens, name="tokens"),
    path("accounts/tokens/<int:pk>/revoke/", pages.token_revoke, name="token_revoke"),
    path("api/", views.index, name="index"),
    path("api/openapi.json", views.openapi, name="schema"),
    path("api/docs/", views.docs, name="docs"),
    path("api/experiments", views.experiments, name="experiments"),
    path("api/experiments/<int:pk>", views.experiment, name="experiment"),
    path("api/experiments/<int:pk>/runs", views.experiment_runs, name="experiment_runs"),
    path("api/experiments/<int:pk>/cancel", views.experiment_cancel, name="experiment_cancel"),
    path("api/experiments/<int:pk>/rate/next", views.rate_next, name="rate_next"),
    path("api/experiments/<int:pk>/votes", views.votes, name="votes"),
    path("api/experiments/<int:pk>/leaderboard", views.leaderboard, name="leaderboard"),
    path("api/experiments/<int:pk>/vote-datasets", rounds.vote_datasets, name="vote_datasets"),
    path("api/experiments/<int:pk>/rounds", rounds.rounds, name="rounds"),
    path("api/experiments/<int:pk>/report.<str:fmt>", views.experiment_report, name="experiment_report"),
    path("api/runs/<int:pk>", views.run, name="run"),
    path("api/runs/<int:pk>/cancel", views.run_cancel, name="run_cancel"),
    path("api/runs/<int:pk>/resume", views.run_resume, name="run_resume"),
    path("api/runs/<int:pk>/metrics", views.run_metrics, name="run_metrics"),
    path("api/runs/<int:pk>/samples", views.run_samples, name="run_samples"),
    re_path(r"^api/(?P<rest>.*)$", views.not_found_view),
]
