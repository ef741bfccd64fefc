"""The v1 JSON API end to end: tokens (shown once, hashed, scoped, expiring, revocable),
sessions, roles, starting and cancelling runs, status, the log from a cursor, OpenAPI."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from fastflow_site.models import ApiToken, AuditEntry
from pipelines_app.discovery import discover
from runs_app.models import PipelineRun
from secrets_app.models import Variable
from tests.runs_app.conftest import run_log

pytestmark = pytest.mark.django_db
Action = AuditEntry.Action


@pytest.fixture
def catalogue(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0  # runs stay queued: the API is what is tested
    make_pipeline("hello", config={"description": "Says hello", "tags": ["demo"]})
    make_pipeline("paused", config={"enabled": False})
    discover()
    secret = Variable(name="API_TOKEN", kind=Variable.Kind.SECRET)
    secret.set_value("s3cret-value")
    secret.save()


def token_client(user, scope=ApiToken.Scope.RUN, **kwargs) -> tuple[Client, ApiToken]:
    token, text = ApiToken.make(user, "test", scope, **kwargs)
    return Client(headers={"Authorization": f"Bearer {text}"}), token


def test_a_token_is_shown_once_and_stored_hashed(client, operator):
    client.force_login(operator)
    html = client.post(reverse("token_create"), {"name": "CI", "scope": "run"}).content.decode()
    text = html.split('id="new-token"')[1].split('<pre class="code">')[1].split("</pre>")[0]
    token = ApiToken.objects.get()
    assert text.startswith(f"fft_{token.prefix}_") and text not in token.token_hash
    assert text not in client.get(reverse("account")).content.decode()
    assert AuditEntry.objects.get(action=Action.TOKEN_CREATED).details == {"scope": "run"}


def test_a_viewer_can_only_make_read_tokens(client, viewer):
    client.force_login(viewer)
    response = client.post(reverse("token_create"), {"name": "x", "scope": "run"})
    assert "Select a valid choice" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_anonymous_callers_get_401_everywhere(client, catalogue):
    for path in ("/api/v1/pipelines", "/api/v1/pipelines/hello", "/api/v1/openapi.json"):
        assert client.get(path).status_code == 401, path
    assert client.post("/api/v1/pipelines/hello/runs", {}, "application/json").status_code == 401
    wrong = Client(headers={"Authorization": "Bearer fft_nope_nope"})
    assert wrong.get("/api/v1/pipelines").status_code == 401


def test_list_and_detail(catalogue, viewer):
    api, token = token_client(viewer, ApiToken.Scope.READ)
    pipelines = api.get("/api/v1/pipelines").json()
    assert [p["name"] for p in pipelines] == ["hello", "paused"]
    assert pipelines[0]["description"] == "Says hello" and pipelines[0]["tags"] == ["demo"]
    assert pipelines[1]["status"] == "disabled"
    detail = api.get("/api/v1/pipelines/hello").json()
    assert detail["errors"] == [] and detail["recent_runs"] == []
    assert api.get("/api/v1/pipelines/nope").status_code == 404
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_start_a_run_status_log_and_cancel(catalogue, operator):
    api, _ = token_client(operator)
    response = api.post(
        "/api/v1/pipelines/hello/runs",
        {"parameters": {"DAY": "monday", "N": 3}},
        "application/json",
    )
    assert response.status_code == 202
    body = response.json()
    run = PipelineRun.objects.get(public_id=body["id"])
    assert run.parameters == {"DAY": "monday", "N": "3"} and run.trigger == "api"
    assert run.triggered_by == operator and body["status"] == "queued"
    started = AuditEntry.objects.get(action=Action.RUN_STARTED)
    assert started.actor == operator and started.via == "api"

    writer = run_log(run)
    for number in range(1, 6):
        writer.write("O", f"line {number}")
    writer.close()
    first = api.get(f"/api/v1/runs/{run.public_id}/log", {"after": 0, "limit": 2}).json()
    assert [line[3] for line in first["lines"]] == ["line 1", "line 2"] and first["next"] == 2
    rest = api.get(f"/api/v1/runs/{run.public_id}/log", {"after": first["next"]}).json()
    assert [line[3] for line in rest["lines"]] == ["line 3", "line 4", "line 5"]
    assert rest["next"] == 5 and rest["finished"] is False
    assert api.get(f"/api/v1/runs/{run.public_id}/log", {"after": 5}).json()["lines"] == []

    cancelled = api.post(f"/api/v1/runs/{run.public_id}/cancel").json()
    assert cancelled["outcome"] == "cancelled" and cancelled["run"]["status"] == "cancelled"
    assert api.get(f"/api/v1/runs/{run.public_id}").json()["status"] == "cancelled"
    assert AuditEntry.objects.filter(action=Action.RUN_CANCELLED, via="api").exists()


def test_starting_follows_the_rules_of_the_run_form(catalogue, operator):
    api, _ = token_client(operator)
    refused = api.post(
        "/api/v1/pipelines/hello/runs", {"parameters": {"API_TOKEN": "mine"}}, "application/json"
    )
    # A secret of this pipeline: a conflict with it (the description cannot know its names).
    assert refused.status_code == 409
    assert "API_TOKEN is a secret" in refused.json()["problems"][0]
    reserved = api.post(
        "/api/v1/pipelines/hello/runs", {"parameters": {"PATH": "/evil"}}, "application/json"
    )
    assert reserved.status_code == 400  # refused for every pipeline, as described
    selection = api.post(
        "/api/v1/pipelines/hello/runs",
        {"parameters": {"FASTFLOW_SELECT": "orders"}},
        "application/json",
    )
    assert selection.status_code == 409 and "for models pipelines" in str(selection.json())
    for malformed in ([1, 2], "text", {"parameters": [1]}, {"parameters": {"A": None}}):
        answer = api.post("/api/v1/pipelines/hello/runs", malformed, "application/json")
        assert answer.status_code in (400, 422), malformed
        assert isinstance(answer.json()["detail"], str)
    bad_limit = api.get(f"/api/v1/runs/{uuid.uuid4()}/log", {"limit": 0})
    assert bad_limit.status_code == 422
    assert bad_limit.json()["problems"] == [
        "query.limit: Input should be greater than or equal to 1"
    ]
    disabled = api.post("/api/v1/pipelines/paused/runs", {}, "application/json")
    assert disabled.status_code == 409 and "confirm_disabled" in disabled.json()["detail"]
    confirmed = api.post(
        "/api/v1/pipelines/paused/runs", {"confirm_disabled": True}, "application/json"
    )
    assert confirmed.status_code == 202
    assert PipelineRun.objects.count() == 1


def test_a_read_token_cannot_start_or_cancel(catalogue, operator):
    api, _ = token_client(operator, ApiToken.Scope.READ)
    response = api.post("/api/v1/pipelines/hello/runs", {}, "application/json")
    assert response.status_code == 403 and "scope is read" in response.json()["detail"]
    assert not PipelineRun.objects.exists()


def test_the_role_applies_to_a_token(catalogue, viewer, stranger):
    ApiToken.objects.create(user=viewer, name="forged", prefix="f0", token_hash="x", scope="run")
    api, _ = token_client(viewer, ApiToken.Scope.READ)
    assert api.post("/api/v1/pipelines/hello/runs", {}, "application/json").status_code == 403
    nobody, _ = token_client(stranger, ApiToken.Scope.READ)
    assert nobody.get("/api/v1/pipelines").status_code == 403


def test_revoked_and_expired_tokens_stop_working(client, catalogue, operator):
    api, token = token_client(operator)
    assert api.get("/api/v1/pipelines").status_code == 200
    client.force_login(operator)
    client.post(reverse("token_revoke", args=[token.prefix]))
    assert api.get("/api/v1/pipelines").status_code == 401
    assert AuditEntry.objects.filter(action=Action.TOKEN_REVOKED).exists()
    expired, _ = token_client(operator, expires_at=timezone.now() - timedelta(seconds=1))
    assert expired.get("/api/v1/pipelines").status_code == 401


def test_a_session_works_and_changes_need_the_csrf_token(catalogue, operator):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    assert browser.get("/api/v1/pipelines").status_code == 200
    assert browser.post("/api/v1/pipelines/hello/runs", {}, "application/json").status_code == 403
    browser.get(reverse("account"))  # sets the CSRF cookie
    csrf = browser.cookies["csrftoken"].value
    response = browser.post(
        "/api/v1/pipelines/hello/runs", {}, "application/json", headers={"X-CSRFToken": csrf}
    )
    assert response.status_code == 202


def test_the_openapi_description_is_served(catalogue, viewer):
    api, _ = token_client(viewer, ApiToken.Scope.READ)
    schema = api.get("/api/v1/openapi.json").json()
    assert schema["info"]["title"] == "Fast-Flow API" and schema["info"]["version"] == "1"
    assert {
        "/api/v1/pipelines",
        "/api/v1/pipelines/{name}",
        "/api/v1/pipelines/{name}/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/log",
        "/api/v1/runs/{run_id}/cancel",
    } <= set(schema["paths"])
    browser = Client()
    browser.force_login(viewer)
    assert browser.get("/api/v1/docs").status_code == 200
    assert "s3cret-value" not in str(schema)
