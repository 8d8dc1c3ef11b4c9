"""Local development: DEBUG on, SQLite next to the code, a throwaway key."""

from .base import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import

DEBUG = True
SECRET_KEY = SECRET_KEY or "local-only-" + "x" * 50  # noqa: F405
ALLOWED_HOSTS = ALLOWED_HOSTS or ["localhost", "127.0.0.1"]  # noqa: F405
