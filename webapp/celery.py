"""The Celery app. Settings come from Django's settings (CELERY_*); tasks from each app's tasks.py.

Start a worker (one per GPU): celery -A webapp worker -Q train -c 1 --prefetch-multiplier 1
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("webapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
