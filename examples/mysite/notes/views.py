import os
import re
import socket

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods
from mysite.version import VERSION

from .models import Note


@require_GET
def index(request):
    notes = Note.objects.order_by("-created")[:20]
    context = {"notes": notes, "version": VERSION, "environment": os.environ.get("DJANGO_ENV", "")}
    return render(request, "notes/index.html", context)


@require_http_methods(["GET", "POST"])
def add(request):
    """A form that writes a note (CSRF-protected like any Django form)."""
    if request.method == "POST":
        text = request.POST.get("text", "").strip()[:200]
        if text:
            Note.objects.create(text=text)
        return redirect("index")
    return render(request, "notes/add.html")


@require_GET
def hello(request):
    return HttpResponse("ok", content_type="text/plain")


@require_GET
def db(request):
    return HttpResponse(str(Note.objects.count()), content_type="text/plain")


@require_GET
def health(request):
    """200 when the code loads and the database answers; the deploy checks this page."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return HttpResponse(f"ok {VERSION} {socket.gethostname()}", content_type="text/plain")


TASK_TEXT = re.compile(r"[A-Za-z0-9 _-]{1,64}")


@require_GET
def task(request):
    """Runs notes.tasks.release_echo on the Celery worker and shows its result."""
    text = request.GET.get("text", "")
    if not TASK_TEXT.fullmatch(text):
        return HttpResponse("text: 1 to 64 characters of A-Z a-z 0-9 space _ -\n", status=400,
                            content_type="text/plain")
    # Imported here: the site runs without celery (requirements/production.txt).
    try:
        from celery.exceptions import TimeoutError as TaskTimeout
        from kombu.exceptions import OperationalError

        from .tasks import release_echo
    except ImportError:
        return HttpResponse("celery is not installed\n", status=503, content_type="text/plain")
    if not getattr(settings, "CELERY_BROKER_URL", ""):
        return HttpResponse("celery is not configured: MYSITE_REDIS_URL is not set\n", status=503,
                            content_type="text/plain")
    try:
        result = release_echo.delay(text)
    except OperationalError:
        return HttpResponse("task broker unreachable\n", status=503, content_type="text/plain")
    try:
        output = result.get(timeout=10)
    except TaskTimeout:
        return HttpResponse("task timed out\n", status=504, content_type="text/plain")
    return HttpResponse(f"task: {output}", content_type="text/plain")
