"""WSGI entry point. DJANGO_SETTINGS_MODULE comes from the environment of each deployment."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings.local")

application = get_wsgi_application()
