from django.contrib import admin

from webapp.datasets.models import Dataset


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "source", "rows", "content_hash", "created")
    readonly_fields = ("content_hash", "rows", "train_rows", "eval_rows", "columns")
