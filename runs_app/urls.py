from __future__ import annotations

from django.urls import path

from runs_app import views

app_name = "runs_app"

urlpatterns = [
    path("", views.run_list, name="list"),
    path("search/", views.search, name="search"),
    path("start/<str:name>/", views.start_run, name="start"),
    path("daemon/<str:name>/", views.daemon_pause, name="daemon_pause"),
    path("<uuid:public_id>/", views.run_detail, name="detail"),
    path("<uuid:public_id>/log/", views.run_log, name="log"),
    path("<uuid:public_id>/steps/", views.run_steps, name="steps"),
    path("<uuid:public_id>/cancel/", views.run_cancel, name="cancel"),
    path("<uuid:public_id>/rerun/", views.run_rerun, name="rerun"),
]
