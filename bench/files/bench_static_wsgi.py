"""The deployment's WSGI entry with Django itself serving /static/ (django.views.static.serve).

The comparison for the web servers' static files: same app, settings and release; only the
URLconf gains the static route that DEBUG-off projects would otherwise not have.
"""

import django_app_wsgi
from django.conf import settings

ORIGINAL_URLCONF = settings.ROOT_URLCONF
settings.ROOT_URLCONF = "bench_static_urls"
application = django_app_wsgi.application
