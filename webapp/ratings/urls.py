from django.urls import path

from webapp.ratings import views

app_name = "ratings"
urlpatterns = [
    path("ratings/", views.index, name="index"),
    path("experiments/<int:pk>/rate/", views.rate, name="rate"),
    path("experiments/<int:pk>/rate/next.json", views.next_item, name="next"),
    path("experiments/<int:pk>/rate/vote.json", views.vote, name="vote"),
    path("experiments/<int:pk>/leaderboard/", views.leaderboard, name="leaderboard"),
    path("experiments/<int:pk>/leaderboard.json", views.leaderboard_json, name="leaderboard_json"),
    path("experiments/<int:pk>/leaderboard/judge/", views.start_judge, name="start_judge"),
    path("judge-jobs/<int:pk>.json", views.judge_job_status, name="judge_job_status"),
    path("experiments/<int:pk>/raters/", views.raters, name="raters"),
    path("experiments/<int:pk>/raters/setup/", views.raters_setup, name="raters_setup"),
    path("experiments/<int:pk>/raters/<int:user_id>/remove/", views.raters_remove, name="raters_remove"),
    path("experiments/<int:pk>/vote-datasets/", views.vote_datasets, name="vote_datasets"),
    path("vote-datasets/<int:pk>.<str:fmt>", views.vote_dataset_file, name="vote_dataset_file"),
    path("experiments/<int:pk>/rounds/", views.rounds, name="rounds"),
    path("experiments/<int:pk>/rounds/start/", views.start_round, name="start_round"),
]
