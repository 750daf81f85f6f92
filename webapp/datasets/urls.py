from django.urls import path

from webapp.datasets import views

app_name = "datasets"
urlpatterns = [
    path("datasets/", views.dataset_list, name="list"),
    path("datasets/new/", views.dataset_new, name="new"),
    path("datasets/uploads/<int:pk>/", views.upload_job, name="upload_job"),
    path("datasets/<int:pk>/", views.dataset_detail, name="detail"),
    path("datasets/<int:pk>/mapping/", views.dataset_mapping, name="mapping"),
    path("signals/", views.signal_list, name="signals"),
]
