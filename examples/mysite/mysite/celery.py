"""The Celery app: settings come from Django's (CELERY_*), tasks from each app's tasks.py.

Only imported when celery is installed (requirements/worker.txt); see mysite/__init__.py.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings.local")

app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
