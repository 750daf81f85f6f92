from django.apps import AppConfig


class CompareConfig(AppConfig):
    name = "webapp.compare"
    verbose_name = "Comparison"
