from django.apps import AppConfig


class CompareConfig(AppConfig):
    name = "webapp.compare"
    verbose_name = "Comparison"

    def ready(self) -> None:
        from webapp.compare.loader import store_summaries
        from webapp.experiments.signals import runs_ended

        runs_ended.connect(store_summaries, dispatch_uid="compare.store_summaries")
