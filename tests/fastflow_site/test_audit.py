"""The audit log: an entry for every action a person takes, from pages, the admin, the
API and commands — never a secret value; read-only everywhere; filters; retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from fastflow_site.models import AuditEntry
from pipelines_app.discovery import discover
from pipelines_app.models import GitSource, WebhookKey
from runs_app.models import PipelineRun
from secrets_app.models import Variable

pytestmark = pytest.mark.django_db
Action = AuditEntry.Action
SECRET = "correct-horse-battery-staple"


@pytest.fixture
def catalogue(make_pipeline, settings, tmp_path):
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0
    make_pipeline("hello")
    discover()


def actions() -> list[str]:
    """What was done, past the sign-in of the test's person."""
    done = AuditEntry.objects.exclude(action=Action.SIGN_IN).order_by("id")
    return list(done.values_list("action", flat=True))


def test_signing_in_and_out(client, viewer):
    client.post(reverse("account_login"), {"login": "vic", "password": "pw-vic"})
    client.post(reverse("account_logout"))
    signed_in, signed_out = AuditEntry.objects.order_by("id")
    assert (signed_in.action, signed_in.actor, signed_in.via) == (Action.SIGN_IN, viewer, "web")
    assert signed_in.ip_address == "127.0.0.1" and signed_in.details["method"] == "password"
    assert signed_out.action == Action.SIGN_OUT and signed_out.actor == viewer


def test_runs_started_cancelled_and_rerun_from_the_pages(operator_client, operator, catalogue):
    operator_client.post(reverse("runs_app:start", args=["hello"]))
    run = PipelineRun.objects.get()
    operator_client.post(reverse("runs_app:cancel", args=[run.public_id]))
    operator_client.post(reverse("runs_app:rerun", args=[run.public_id]))
    assert actions() == [Action.RUN_STARTED, Action.RUN_CANCELLED, Action.RUN_RERUN]
    started = AuditEntry.objects.get(action=Action.RUN_STARTED)
    assert started.actor == operator and started.object_id == str(run.public_id)
    assert started.object_type == "runs_app.pipelinerun"


def test_runs_from_the_admin_and_commands(admin_client, admin_user, catalogue):
    hello = PipelineRun._meta.get_field("pipeline").related_model.objects.get(name="hello")
    admin_client.post(
        reverse("admin:pipelines_app_pipeline_changelist"),
        {"action": "run_now", "_selected_action": [hello.pk]},
    )
    call_command("runpipeline", "hello", "--as", "ada")
    run = PipelineRun.objects.first()
    call_command("cancelrun", str(run.public_id))
    entries = list(AuditEntry.objects.exclude(action=Action.SIGN_IN).order_by("id"))
    assert [(e.action, e.via) for e in entries] == [
        (Action.RUN_STARTED, "admin"),
        (Action.RUN_STARTED, "command"),
        (Action.RUN_CANCELLED, "command"),
    ]
    assert entries[1].actor == admin_user and entries[2].actor is None


def test_schedules_and_webhook_keys(operator_client, catalogue):
    base = reverse("pipelines_app:detail", args=["hello"])
    operator_client.post(
        reverse("pipelines_app:schedule_add", args=["hello"]),
        {"config_id": "hourly", "cron": "0 * * * *", "timezone": "UTC", "enabled": "on"},
    )
    operator_client.post(
        reverse("pipelines_app:schedule_edit", args=["hello", "hourly"]),
        {"config_id": "hourly", "cron": "5 * * * *", "timezone": "UTC", "enabled": "on"},
    )
    operator_client.post(reverse("pipelines_app:schedule_delete", args=["hello", "hourly"]))
    operator_client.post(reverse("pipelines_app:webhook_key_add", args=["hello"]), {"label": "CI"})
    key = WebhookKey.objects.get()
    operator_client.post(reverse("pipelines_app:webhook_key_delete", args=["hello", key.prefix]))
    assert actions() == [
        Action.SCHEDULE_CREATED,
        Action.SCHEDULE_CHANGED,
        Action.SCHEDULE_DELETED,
        Action.WEBHOOK_KEY_CREATED,
        Action.WEBHOOK_KEY_REVOKED,
    ]
    changed = AuditEntry.objects.get(action=Action.SCHEDULE_CHANGED)
    assert "cron" in changed.details["fields"] and base


def test_secrets_by_name_never_by_value(admin_client, catalogue):
    listing = reverse("secrets_app:list")
    admin_client.post(listing, {"name": "DB_PASSWORD", "kind": "secret", "new_value": SECRET})
    edit = reverse("secrets_app:edit_global", args=["DB_PASSWORD"])
    admin_client.post(edit, {"name": "DB_PASSWORD", "kind": "secret", "new_value": SECRET + "2"})
    admin_client.post(edit, {"name": "DB_PASSWORD", "kind": "secret", "description": "prod"})
    admin_client.post(reverse("secrets_app:delete_global", args=["DB_PASSWORD"]))
    admin_client.post(listing, {"name": "REGION", "kind": "parameter", "new_value": "eu"})
    assert actions() == [
        Action.SECRET_CREATED,
        Action.SECRET_REPLACED,
        Action.SECRET_CHANGED,
        Action.SECRET_DELETED,
        Action.PARAMETER_CREATED,
    ]
    for entry in AuditEntry.objects.all():
        assert SECRET not in str(entry.details) and SECRET not in entry.object_repr
    assert AuditEntry.objects.filter(object_repr__startswith="DB_PASSWORD").count() == 4
    page = admin_client.get(reverse("audit_log")).content.decode()
    assert "DB_PASSWORD" in page and SECRET not in page


def test_secrets_changed_in_the_admin_are_recorded_too(admin_client):
    admin_client.post(
        reverse("admin:secrets_app_variable_add"),
        {"name": "TOKEN", "kind": "secret", "new_value": SECRET, "description": ""},
    )
    assert Variable.objects.filter(name="TOKEN").exists()
    entry = AuditEntry.objects.get(action=Action.SECRET_CREATED)
    assert entry.via == "admin" and SECRET not in str(entry.details)


def test_repository_and_sync_actions(admin_client, settings):
    settings.GIT_REPO_URL = ""
    admin_client.post(
        reverse("admin:pipelines_app_gitsource_add"),
        {"url": "https://example.com/repo.git", "branch": "main", "subdir": "", "auth": "token",
         "new_token": SECRET, "new_webhook_secret": "", "ssh_known_hosts": ""},
    )  # fmt: skip
    source = GitSource.objects.get()
    admin_client.post(reverse("sync_now"))
    admin_client.post(
        reverse("admin:pipelines_app_gitsource_changelist"),
        {"action": "make_deploy_key", "_selected_action": [source.pk]},
    )
    assert actions() == [
        Action.REPOSITORY_CHANGED,
        Action.SYNC_REQUESTED,
        Action.REPOSITORY_CHANGED,  # the deploy key is stored on the repository
        Action.DEPLOY_KEY_MADE,
    ]
    assert all(SECRET not in str(e.details) for e in AuditEntry.objects.all())


def test_the_audit_page_filters(admin_client, admin_user, viewer):
    bob = get_user_model().objects.create_user("bob", "bob@example.com")
    old = AuditEntry.objects.create(action=Action.SIGN_IN, actor=bob, actor_name="bob")
    AuditEntry.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=3))
    AuditEntry.objects.create(
        action=Action.ROLE_CHANGED, actor=admin_user, actor_name="ada", object_repr="vic"
    )

    def rows(**query) -> list[str]:
        page = admin_client.get(reverse("audit_log"), query).content.decode()
        table = page.split("<tbody>")[1].split("</tbody>")[0]
        return [cell.split("</td>")[0] for cell in table.split("<td>")[1:] if "</td>" in cell]

    assert "signed in" in rows(person="bob") and "changed a role" not in rows(person="bob")
    assert "changed a role" in rows(action="role_changed")
    assert "bob" not in rows(action="role_changed")
    assert "changed a role" in rows(object="vic")
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert "changed a role" in rows(since=since) and "bob" not in rows(since=since)


def test_nobody_edits_or_deletes_an_entry(admin_client):
    entry = AuditEntry.objects.create(action=Action.SIGN_IN, actor_name="x")
    change = reverse("admin:fastflow_site_auditentry_change", args=[entry.pk])
    assert admin_client.get(change).status_code == 200  # readable
    assert b'name="action"' not in admin_client.get(change).content
    admin_client.post(change, {"action": "sign_out"})
    delete = reverse("admin:fastflow_site_auditentry_delete", args=[entry.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    entry.refresh_from_db()
    assert entry.action == Action.SIGN_IN
    with pytest.raises(ValueError, match="append-only"):
        entry.save()
    with pytest.raises(ValueError, match="append-only"):
        entry.delete()


def test_retention_removes_only_old_entries(settings):
    settings.AUDIT_RETENTION_DAYS = 30
    old = AuditEntry.objects.create(action=Action.SIGN_IN)
    AuditEntry.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=31))
    AuditEntry.objects.create(action=Action.SIGN_OUT)
    assert AuditEntry.prune() == 1
    assert list(AuditEntry.objects.values_list("action", flat=True)) == [Action.SIGN_OUT]
    settings.AUDIT_RETENTION_DAYS = None
    assert AuditEntry.prune() == 0


def test_an_entry_says_where_from(viewer):
    browser = Client(REMOTE_ADDR="203.0.113.9", HTTP_USER_AGENT="Firefox/200")
    browser.post(reverse("account_login"), {"login": "vic", "password": "pw-vic"})
    entry = AuditEntry.objects.get(action=Action.SIGN_IN)
    assert entry.ip_address == "203.0.113.9" and entry.user_agent == "Firefox/200"
