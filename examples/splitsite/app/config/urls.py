"""Admin, and a page that says which environment's settings and secrets the site runs with."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.urls import path


def banner(request):
    return HttpResponse(f"splitsite {settings.SITE_BANNER}\n", content_type="text/plain")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("", banner),
]
