"""Production: DEBUG off, hosts and banner from the deploy secrets file."""

import json

from .base import *  # noqa: F403  # pylint: disable=wildcard-import,unused-wildcard-import
from .base import CONFIG_SECRET_DEPLOY_FILE

with open(CONFIG_SECRET_DEPLOY_FILE, encoding="utf-8") as _file:
    config_secret_deploy = json.load(_file)

DEBUG = False
WSGI_APPLICATION = "config.wsgi.deploy.application"
ALLOWED_HOSTS = config_secret_deploy["django"]["allowed_hosts"]
SITE_BANNER = config_secret_deploy["django"].get("banner", "deploy")
