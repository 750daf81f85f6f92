from django.urls import path

from webapp.compare import views

app_name = "compare"
urlpatterns = [
    path("experiments/<int:pk>/compare/", views.experiment_compare, name="experiment"),
    path("experiments/<int:pk>/compare/data.json", views.experiment_data, name="experiment_data"),
    path("experiments/<int:pk>/compare/samples.json", views.experiment_samples, name="experiment_samples"),
    path("compare/", views.runs_compare, name="runs"),
    path("compare/data.json", views.runs_data, name="runs_data"),
    path("compare/samples.json", views.runs_samples, name="runs_samples"),
    path("runs/<int:pk>/live.json", views.run_live, name="run_live"),
    path("compare/detectable.json", views.detectable, name="detectable"),
]
