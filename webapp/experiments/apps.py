from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "webapp.experiments"
    verbose_name = "Experiments"

    def ready(self) -> None:
        from webapp.experiments import worker  # noqa: F401  (connects the Celery worker signals)
