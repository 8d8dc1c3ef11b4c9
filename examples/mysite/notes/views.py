import os
import socket

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
