"""Every URL for every role: below a page's role the server answers 403 (anonymous people
are sent to sign in), at or above it the page does not refuse. A new URL must be added
to the table, so none escapes this walk. The admin, per role, too."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from fastflow_site.roles import role_of
from pipelines_app.discovery import discover
from tests.fastflow_site.test_login_required import every_url

pytestmark = pytest.mark.django_db

LEVELS = ["anonymous", "stranger", "viewer", "operator", "admin"]
SIGNED_IN, VIEWER, OPERATOR, ADMIN = "stranger", "viewer", "operator", "admin"

# url name → (method, the lowest level that may use it)
PAGES = {
    "home": ("get", VIEWER),
    "dashboard_live": ("get", VIEWER),
    "runs_app:list": ("get", VIEWER),
    "runs_app:detail": ("get", VIEWER),
    "runs_app:log": ("get", VIEWER),
    "runs_app:steps": ("get", VIEWER),
    "runs_app:search": ("get", VIEWER),
    "graph": ("get", VIEWER),
    "workers": ("get", VIEWER),
    "pipelines_app:list": ("get", VIEWER),
    "pipelines_app:detail": ("get", VIEWER),
    "pipelines_app:models_docs": ("get", VIEWER),
    "pipelines_app:recent_runs": ("get", VIEWER),
    "pipelines_app:code": ("get", VIEWER),
    "secrets_app:list": ("get", VIEWER),
    "sync": ("get", VIEWER),
    "runs_app:start": ("post", OPERATOR),
    "runs_app:cancel": ("post", OPERATOR),
    "runs_app:rerun": ("post", OPERATOR),
    "runs_app:daemon_pause": ("post", OPERATOR),
    "worker_drain": ("post", OPERATOR),
    "pipelines_app:webhook_key_add": ("post", OPERATOR),
    "pipelines_app:webhook_key_delete": ("post", OPERATOR),
    "pipelines_app:schedule_add": ("get", OPERATOR),
    "pipelines_app:schedule_edit": ("get", OPERATOR),
    "pipelines_app:schedule_delete": ("post", OPERATOR),
    "secrets_app:edit": ("get", OPERATOR),
    "secrets_app:edit_global": ("get", OPERATOR),
    "secrets_app:delete": ("post", OPERATOR),
    "secrets_app:delete_global": ("post", OPERATOR),
    "secrets_app:encrypt": ("post", ADMIN),
    "sync_now": ("post", ADMIN),
    "people": ("get", ADMIN),
    "invite": ("post", ADMIN),
    "person_role": ("post", ADMIN),
    "person_active": ("post", ADMIN),
    "invitation_revoke": ("post", ADMIN),
    "join_request_decide": ("post", ADMIN),
    "audit_log": ("get", ADMIN),
    "account": ("get", SIGNED_IN),
    "token_create": ("post", SIGNED_IN),
    "token_revoke": ("post", SIGNED_IN),
}
# Not behind a role: the sign-in pages, invitation links and join requests (before sign-in),
# webhooks and GitHub's push hook (their own keys), the API (tests/fastflow_site/test_api.py).
# Health and metrics: tests/fastflow_site/test_operations.py.
ELSEWHERE = {"invitation", "join_request", "webhook", "git_push", "health", "health_ready",
             "metrics"}  # fmt: skip


def routes() -> list[tuple[str, str]]:
    return [
        (name, path)
        for name, path in every_url()
        if name not in ELSEWHERE and not path.startswith(("/accounts/", "/api/", "/admin/"))
    ]


def qualified(name: str, path: str) -> str:
    for key in PAGES:
        if key.split(":")[-1] == name and _prefix_of(key) in path:
            return key
    return name


def _prefix_of(key: str) -> str:
    return {"runs_app": "/runs/", "pipelines_app": "/pipelines/", "secrets_app": "/secrets/"}.get(
        key.split(":")[0], "/"
    )


def test_the_table_covers_every_url():
    names = {qualified(name, path) for name, path in routes()}
    assert names == set(PAGES), (names - set(PAGES), set(PAGES) - names)


@pytest.fixture
def people(admin_user, operator, viewer, stranger):
    return {"stranger": stranger, "viewer": viewer, "operator": operator, "admin": admin_user}


@pytest.mark.parametrize("level", LEVELS)
def test_every_url_for_every_role(client, people, pipelines_dir, level):
    if level != "anonymous":
        client.force_login(people[level])
        assert (role_of(people[level]) or "stranger") == level
    for name, path in routes():
        method, lowest = PAGES[qualified(name, path)]
        response = getattr(client, method)(path)
        if level == "anonymous":
            assert response.status_code == 302, (path, response.status_code)
            assert response.url.startswith(reverse("account_login")), path
        elif LEVELS.index(level) < LEVELS.index(lowest):
            assert response.status_code == 403, (level, path, response.status_code)
        else:
            assert response.status_code != 403, (level, path)
            location = response.get("Location", "")
            assert not location.startswith(reverse("account_login")), (level, path)


def test_pages_hide_what_a_role_cannot_do(client, people, example_pipelines):
    discover()
    detail = reverse("pipelines_app:detail", args=["hello_world"])
    client.force_login(people["viewer"])
    html = client.get(detail).content.decode()
    assert 'action="/runs/start/hello_world/"' not in html
    assert "Make a webhook key" not in html and "Add a schedule" not in html
    nav = client.get(reverse("home")).content.decode()
    assert ">People<" not in nav and ">Audit<" not in nav and ">Admin<" not in nav
    client.force_login(people["operator"])
    html = client.get(detail).content.decode()
    assert 'action="/runs/start/hello_world/"' in html and "Make a webhook key" in html
    nav = client.get(reverse("home")).content.decode()
    assert ">Admin<" in nav and ">People<" not in nav
    client.force_login(people["admin"])
    nav = client.get(reverse("home")).content.decode()
    assert ">People<" in nav and ">Audit<" in nav


ADMIN_PAGES_FOR_OPERATORS = {
    "runs_app.pipelinerun": 200,
    "pipelines_app.pipeline": 200,
    "pipelines_app.schedule": 200,
    "pipelines_app.webhookkey": 200,
    "secrets_app.variable": 200,
    "django_q.success": 200,
    "auth.user": 403,
    "auth.group": 403,
    "fastflow_site.auditentry": 403,
    "fastflow_site.invitation": 403,
    "fastflow_site.signinprovider": 403,
    "fastflow_site.apitoken": 403,
}


@pytest.mark.parametrize("level", ["stranger", "viewer", "operator", "admin"])
def test_the_admin_for_every_role(client, people, level):
    client.force_login(people[level])
    index = client.get(reverse("admin:index"), follow=True)
    if level in ("stranger", "viewer"):
        assert index.status_code == 403  # not staff: the admin is the operator's console
        return
    assert index.status_code == 200
    for model in admin.site._registry:
        label = model._meta.label_lower
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        status = client.get(url).status_code
        if level == "admin":
            assert status == 200, url
        elif label in ADMIN_PAGES_FOR_OPERATORS:
            assert status == ADMIN_PAGES_FOR_OPERATORS[label], url
