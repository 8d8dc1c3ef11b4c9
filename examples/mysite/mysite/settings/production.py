"""Production-like environments (dev, staging, prod): HTTPS only, every deploy check on.

The web server redirects HTTP to HTTPS and passes HTTPS=on to the app (uwsgi_params,
mod_wsgi), so Django sees secure requests without SECURE_PROXY_SSL_HEADER.
"""

from .base import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .base import env

SECURE_SSL_REDIRECT = True
SECURE_HSTS_SECONDS = int(env("DJANGO_HSTS_SECONDS", "63072000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env("DJANGO_HSTS_PRELOAD", "false") == "true"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
