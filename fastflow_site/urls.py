"""URL routes of the whole site: each app mounts its own urls.py under a prefix."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from pipelines_app import views as pipeline_views
from runs_app import views as run_views

admin.site.site_header = "Fast-Flow administration"
admin.site.site_title = "Fast-Flow"
admin.site.index_title = "Operator console"

urlpatterns = [
    path("", run_views.dashboard, name="home"),
    # Password reset by e-mail is left out on purpose: people come in through an admin
    # (and OAuth), and an unauthenticated mail-sending form is attack surface.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password_change/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("pipelines/", include("pipelines_app.urls")),
    path("hooks/<str:name>/", run_views.webhook, name="webhook"),
    path("sync/", pipeline_views.sync_status, name="sync"),
    path("sync/now/", pipeline_views.sync_now, name="sync_now"),
    path("git/push/", pipeline_views.git_push, name="git_push"),
    path("runs/", include("runs_app.urls")),
    path("graph/", run_views.chain_graph, name="graph"),
    path("secrets/", include("secrets_app.urls")),
    path("admin/", admin.site.urls),
]
