from django.urls import path

from webapp.experiments import views

app_name = "experiments"
urlpatterns = [
    path("", views.experiment_list, name="list"),
    path("experiments/new/", views.experiment_new, name="new"),
    path("experiments/<int:pk>/", views.experiment_detail, name="detail"),
    path("experiments/<int:pk>/status.json", views.experiment_status, name="status"),
    path("experiments/<int:pk>/cancel/", views.experiment_cancel, name="cancel"),
    path("experiments/<int:pk>/clone/", views.experiment_clone, name="clone"),
    path("experiments/<int:pk>/edit/", views.experiment_edit, name="edit"),
    path("experiments/<int:pk>/star/", views.experiment_star, name="star"),
    path("experiments/<int:pk>/archive/", views.experiment_archive, name="archive"),
    path("experiments/<int:pk>/delete/", views.experiment_delete, name="delete"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/download/model.zip", views.run_download_model, name="run_download_model"),
    path("runs/<int:pk>/download/checkpoint-<int:step>.zip", views.run_download_checkpoint,
         name="run_download_checkpoint"),
    path("runs/<int:pk>/try/", views.run_try, name="run_try"),
    path("trials/<int:pk>/", views.trial_detail, name="trial"),
    path("trials/<int:pk>/status.json", views.trial_status, name="trial_status"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/resume/", views.run_resume, name="run_resume"),
    path("workers/", views.worker_list, name="workers"),
]
