"""URL routes of the whole site: each app mounts its own urls.py under a prefix."""

from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from fastflow_site import operations
from fastflow_site import views as site_views
from fastflow_site.api import api
from pipelines_app import views as pipeline_views
from runs_app import views as run_views

admin.site.site_header = "Fast-Flow administration"
admin.site.site_title = "Fast-Flow"
admin.site.index_title = "Operator console"
# One sign-in page for everything (providers, two-factor); the admin has no password form.
admin.site.login = secure_admin_login(admin.site.login)
handler500 = operations.server_error


def _api_urls():
    """The API authenticates each call itself (token or session): 401, never a redirect."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        pattern.callback.login_required = False
    return patterns, app_name, namespace


urlpatterns = [
    path("", run_views.dashboard, name="home"),
    path("dashboard/live/", run_views.dashboard_live, name="dashboard_live"),
    # E-mail addresses come verified from a provider or an invitation, never typed in: an
    # unverified address added here could be mistaken for someone else's.
    path("accounts/email/", RedirectView.as_view(pattern_name="account"), name="account_email"),
    path("accounts/", include("allauth.urls")),
    path("account/", site_views.account, name="account"),
    path("account/tokens/", site_views.token_create, name="token_create"),
    path("account/tokens/<str:prefix>/revoke/", site_views.token_revoke, name="token_revoke"),
    path("invitations/<str:token>/", site_views.invitation, name="invitation"),
    path("join/", site_views.join_request, name="join_request"),
    path("people/", site_views.people_list, name="people"),
    path("people/invite/", site_views.invite, name="invite"),
    path("people/<int:pk>/role/", site_views.person_role, name="person_role"),
    path("people/<int:pk>/active/", site_views.person_active, name="person_active"),
    path(
        "people/invitations/<int:pk>/revoke/",
        site_views.invitation_revoke,
        name="invitation_revoke",
    ),
    path(
        "people/join-requests/<int:pk>/",
        site_views.join_request_decide,
        name="join_request_decide",
    ),
    path("audit/", site_views.audit_log, name="audit_log"),
    path("health/", operations.live, name="health"),
    path("health/ready/", operations.ready, name="health_ready"),
    path("metrics", operations.metrics, name="metrics"),
    path("api/v1/", _api_urls()),
    path("pipelines/", include("pipelines_app.urls")),
    path("hooks/<str:name>/", run_views.webhook, name="webhook"),
    path("sync/", pipeline_views.sync_status, name="sync"),
    path("sync/now/", pipeline_views.sync_now, name="sync_now"),
    path("git/push/", pipeline_views.git_push, name="git_push"),
    path("runs/", include("runs_app.urls")),
    path("graph/", run_views.chain_graph, name="graph"),
    path("workers/", run_views.workers, name="workers"),
    path("workers/<str:name>/drain/", run_views.worker_drain, name="worker_drain"),
    path("secrets/", include("secrets_app.urls")),
    path("admin/", admin.site.urls),
]
