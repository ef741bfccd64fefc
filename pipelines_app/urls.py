from __future__ import annotations

from django.urls import path

from pipelines_app import views

app_name = "pipelines_app"

urlpatterns = [
    path("", views.pipeline_list, name="list"),
    path("<str:name>/", views.pipeline_detail, name="detail"),
    path("<str:name>/run/", views.pipeline_run, name="run"),
]
