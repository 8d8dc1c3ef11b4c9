# Load the Celery app with Django so tasks submitted from views use it. Celery is optional:
# hosts installing only requirements/production.txt run the site without it.
try:
    import celery  # noqa: F401
except ImportError:
    celery_app = None
else:
    from .celery import app as celery_app

__all__ = ("celery_app",)
