"""URL routes of the whole site: each app mounts its own urls.py under a prefix."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "Fast-Flow administration"
admin.site.site_title = "Fast-Flow"
admin.site.index_title = "Operator console"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="pipelines_app:list"), name="home"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("pipelines/", include("pipelines_app.urls")),
    path("admin/", admin.site.urls),
]
