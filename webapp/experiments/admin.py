from django.contrib import admin

from webapp.experiments.models import Experiment, Metric, Run, Sample, Worker


class RunInline(admin.TabularInline):
    model = Run
    fields = ("method", "seed", "state", "step", "total", "attempts", "claimed_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "base_model", "task", "methods", "seeds", "queue", "created")
    list_filter = ("queue", "created")
    search_fields = ("name", "owner__username", "base_model")
    filter_horizontal = ("shared_with",)
    inlines = [RunInline]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "experiment", "method", "seed", "state", "step", "total", "attempts", "claimed_by",
                    "heartbeat_at")
    list_filter = ("state", "method")
    search_fields = ("experiment__name", "claimed_by")
    raw_id_fields = ("experiment", "depends_on")


@admin.register(Metric)
class MetricAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "name", "value")
    list_filter = ("name",)
    raw_id_fields = ("run",)


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "prompt_id", "index", "reward")
    raw_id_fields = ("run",)


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("hostname", "gpu", "gpu_count", "gpu_memory_mb", "queues", "current_run", "last_heartbeat")
    raw_id_fields = ("current_run",)
