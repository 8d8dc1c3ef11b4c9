from django.contrib import admin
from django.urls import path
from notes import views

urlpatterns = [
    path("", views.index, name="index"),
    path("add/", views.add, name="add"),
    path("hello", views.hello, name="hello"),
    path("db", views.db, name="db"),
    path("health/", views.health, name="health"),
    path("task", views.task, name="task"),
    path("admin/", admin.site.urls),
]
