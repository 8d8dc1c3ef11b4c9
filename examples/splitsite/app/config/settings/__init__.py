"""Settings package: local unless DJANGO_SETTINGS_MODULE names config.settings.dev or .deploy."""

import os

SETTINGS_MODULE = os.environ.get("DJANGO_SETTINGS_MODULE")
if not SETTINGS_MODULE or SETTINGS_MODULE == "config.settings":
    from .local import *  # noqa: F403
