from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "webapp.workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        from webapp.workers import worker  # noqa: F401  (connects the Celery worker signals)
