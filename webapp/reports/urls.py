from django.urls import path

from webapp.reports import views

app_name = "reports"
urlpatterns = [
    path("experiments/<int:pk>/report.<str:fmt>", views.export, name="export"),
    path("compare/report.<str:fmt>", views.runs_export, name="runs_export"),
    path("reports/import/", views.import_report, name="import"),
    path("reports/imports/<int:pk>/", views.import_job, name="import_job"),
]
