"""A developer's machine: DEBUG, SQLite beside manage.py."""

from .base import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import

DEBUG = True
WSGI_APPLICATION = "config.wsgi.local.application"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

SITE_BANNER = "local"
