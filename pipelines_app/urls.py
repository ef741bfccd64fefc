from __future__ import annotations

from django.urls import path

from pipelines_app import views

app_name = "pipelines_app"

urlpatterns = [
    path("", views.pipeline_list, name="list"),
    path("<str:name>/", views.pipeline_detail, name="detail"),
    path("<str:name>/docs/", views.models_docs, name="models_docs"),
    path("<str:name>/code/", views.pipeline_code, name="code"),
    path("<str:name>/runs/", views.recent_runs, name="recent_runs"),
    path("<str:name>/webhook-keys/", views.webhook_key_add, name="webhook_key_add"),
    path(
        "<str:name>/webhook-keys/<str:prefix>/delete/",
        views.webhook_key_delete,
        name="webhook_key_delete",
    ),
    path("<str:name>/schedules/new/", views.schedule_add, name="schedule_add"),
    path("<str:name>/schedules/<str:config_id>/", views.schedule_edit, name="schedule_edit"),
    path(
        "<str:name>/schedules/<str:config_id>/delete/",
        views.schedule_delete,
        name="schedule_delete",
    ),
]
