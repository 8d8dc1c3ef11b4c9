"""The shared development server: its own secrets file."""

import json

from .base import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .base import CONFIG_SECRET_DEV_FILE

with open(CONFIG_SECRET_DEV_FILE, encoding="utf-8") as _file:
    config_secret_dev = json.load(_file)

DEBUG = True
WSGI_APPLICATION = "config.wsgi.dev.application"
ALLOWED_HOSTS = config_secret_dev["django"]["allowed_hosts"]
SITE_BANNER = config_secret_dev["django"].get("banner", "dev")
