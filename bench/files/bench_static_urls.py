"""The app's URLconf with /static/ served by Django's static view."""

from importlib import import_module

from bench_static_wsgi import ORIGINAL_URLCONF
from django.conf import settings
from django.urls import re_path
from django.views.static import serve

urlpatterns = [
    re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT}),
    *import_module(ORIGINAL_URLCONF).urlpatterns,
]
