"""Admins and people: invitations from the page and `manage.py invite`, role changes,
deactivation ending sessions, API tokens and live websockets at once."""

from __future__ import annotations

import asyncio
from io import StringIO

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from fastflow_site.models import ApiToken, AuditEntry, Invitation
from fastflow_site.roles import Role, role_of
from pipelines_app.discovery import discover
from pipelines_app.models import Pipeline
from runs_app.models import PipelineRun
from tests.runs_app.test_live_log import ORIGIN, connect, receive_until

Action = AuditEntry.Action


@pytest.mark.django_db
def test_an_admin_invites_from_the_people_page_and_sees_the_link_once(admin_client, settings):
    settings.MAIL_CONFIGURED = False
    response = admin_client.post(
        reverse("invite"), {"email": "new@example.com", "role": "operator"}
    )
    html = response.content.decode()
    assert response["Cache-Control"] == "no-store"
    link = html.split('id="new-invitation"')[1].split('<pre class="code">')[1].split("</pre>")[0]
    assert link.startswith(settings.BASE_URL + "/invitations/")
    invitation = Invitation.objects.get()
    assert (invitation.email, invitation.role, invitation.state) == (
        "new@example.com",
        "operator",
        "pending",
    )
    assert link.rsplit("/", 2)[-2] not in str(
        Invitation.objects.values_list()
    )  # only a hash stored
    assert link not in admin_client.get(reverse("people")).content.decode()
    assert AuditEntry.objects.get(action=Action.INVITATION_CREATED).details["role"] == "operator"


@pytest.mark.django_db
def test_an_invitation_is_mailed_when_mail_is_configured(admin_client, settings):
    settings.MAIL_CONFIGURED = True
    admin_client.post(reverse("invite"), {"email": "new@example.com", "role": "viewer"})
    (message,) = mail.outbox
    assert message.to == ["new@example.com"] and "/invitations/" in message.body


@pytest.mark.django_db
def test_the_invite_command_prints_the_link(admin_user, settings):
    out = StringIO()
    call_command("invite", "cli@example.com", "--role", "admin", "--as", "ada", stdout=out)
    assert "Invitation for cli@example.com as admin" in out.getvalue()
    assert "/invitations/" in out.getvalue()
    entry = AuditEntry.objects.get(action=Action.INVITATION_CREATED)
    assert entry.actor == admin_user and entry.via == "command"


@pytest.mark.django_db
def test_the_invite_command_refuses_people_who_may_not_invite(operator):
    with pytest.raises(CommandError, match="role does not allow"):
        call_command("invite", "x@example.com", "--as", "otto")
    with pytest.raises(CommandError, match=r"invalid choice"):
        call_command("invite", "x@example.com", "--role", "king")


@pytest.mark.django_db
def test_roles_change_and_are_recorded(admin_client, viewer, admin_user):
    admin_client.post(reverse("person_role", args=[viewer.pk]), {"role": "operator"})
    viewer.refresh_from_db()
    assert role_of(viewer) == Role.OPERATOR and viewer.is_staff
    assert list(viewer.groups.values_list("name", flat=True)) == ["operator"]
    entry = AuditEntry.objects.get(action=Action.ROLE_CHANGED)
    assert entry.details == {"before": "viewer", "after": "operator"} and entry.actor == admin_user


@pytest.mark.django_db
def test_the_last_admin_cannot_be_demoted_or_deactivated(admin_client, admin_user):
    response = admin_client.post(
        reverse("person_role", args=[admin_user.pk]), {"role": "viewer"}, follow=True
    )
    assert "last active admin" in response.content.decode()
    admin_user.refresh_from_db()
    assert role_of(admin_user) == Role.ADMIN


@pytest.mark.django_db
def test_deactivating_ends_sessions_and_tokens_at_once(admin_client, operator):
    theirs = Client()
    theirs.force_login(operator)
    assert theirs.get(reverse("runs_app:list")).status_code == 200
    _, text = ApiToken.make(operator, "CI", ApiToken.Scope.RUN)
    api = Client(headers={"Authorization": f"Bearer {text}"})
    assert api.get("/api/v1/pipelines").status_code == 200

    admin_client.post(reverse("person_active", args=[operator.pk]), {"active": "no"})
    operator.refresh_from_db()
    assert not operator.is_active
    assert theirs.get(reverse("runs_app:list")).status_code == 302  # to the sign-in page
    assert api.get("/api/v1/pipelines").status_code == 401
    assert ApiToken.objects.get().state == "revoked"
    entry = AuditEntry.objects.get(action=Action.PERSON_DEACTIVATED)
    assert entry.details == {"sessions": 1, "tokens": 1}
    # they cannot sign in again either
    response = theirs.post(reverse("account_login"), {"login": "otto", "password": "pw-otto"})
    assert "_auth_user_id" not in theirs.session
    assert response.status_code in (200, 302)

    admin_client.post(reverse("person_active", args=[operator.pk]), {"active": "yes"})
    operator.refresh_from_db()
    assert operator.is_active
    assert AuditEntry.objects.filter(action=Action.PERSON_REACTIVATED).exists()


@pytest.mark.django_db
def test_people_pages_are_for_admins_only(client, operator, viewer):
    for person in (operator, viewer):
        client.force_login(person)
        assert client.get(reverse("people")).status_code == 403
        assert (
            client.post(reverse("invite"), {"email": "x@example.com", "role": "admin"}).status_code
            == 403
        )
        assert client.get(reverse("audit_log")).status_code == 403
    assert not Invitation.objects.exists()


def queued_run_and_cookie(make_pipeline, settings, tmp_path, person):
    """A run that stays queued, and the session cookie of `person` for its websocket."""
    settings.LOGS_DIR = tmp_path / "logs"
    settings.MAX_CONCURRENT_RUNS = 0  # nothing executes; the run stays queued
    make_pipeline("p")
    discover()
    run = PipelineRun.enqueue(Pipeline.objects.get(name="p"), trigger="manual")
    theirs = Client()
    theirs.force_login(person)
    return run, (b"cookie", f"sessionid={theirs.cookies['sessionid'].value}".encode())


@pytest.mark.django_db(transaction=True)
def test_deactivating_closes_a_live_log_websocket(
    make_pipeline, settings, tmp_path, admin_user, operator
):
    run, cookie = queued_run_and_cookie(make_pipeline, settings, tmp_path, operator)

    async def scenario():
        socket = await connect(run, [ORIGIN, cookie])
        assert socket.connected
        await receive_until(socket, lambda m: m["type"] == "status")
        admin = await database_sync_to_async(Client)()
        await database_sync_to_async(admin.force_login)(admin_user)
        await database_sync_to_async(admin.post)(
            reverse("person_active", args=[operator.pk]), {"active": "no"}
        )
        closed = await socket.receive_output(timeout=5)
        assert closed["type"] == "websocket.close" and closed["code"] == 4401
        await socket.disconnect()

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_person_without_a_role_gets_no_websocket(make_pipeline, settings, tmp_path, stranger):
    run, cookie = queued_run_and_cookie(make_pipeline, settings, tmp_path, stranger)

    async def scenario():
        socket = await connect(run, [ORIGIN, cookie])
        assert not socket.connected and socket.code == 4403

    asyncio.run(scenario())


@pytest.mark.django_db
def test_the_admin_user_form_sets_exactly_one_role(admin_client, viewer, admin_user):
    change = reverse("admin:auth_user_change", args=[viewer.pk])
    form = admin_client.get(change).content.decode()
    assert 'name="role"' in form and 'name="groups"' not in form
    admin_client.post(
        change,
        {"username": "vic", "email": "vic@example.com", "first_name": "", "last_name": "",
         "role": "operator", "is_active": "on"},
    )  # fmt: skip
    viewer.refresh_from_db()
    assert role_of(viewer) == Role.OPERATOR and viewer.groups.count() == 1
    admin_client.post(
        change,
        {"username": "vic", "email": "vic@example.com", "first_name": "", "last_name": "",
         "role": "operator"},
    )  # fmt: skip
    viewer.refresh_from_db()
    assert not viewer.is_active
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {Action.ROLE_CHANGED, Action.PERSON_DEACTIVATED} <= actions


@pytest.mark.django_db
def test_a_person_added_in_the_admin_starts_as_viewer(admin_client):
    admin_client.post(
        reverse("admin:auth_user_add"),
        {"username": "newbie", "password1": "a long passphrase 42",
         "password2": "a long passphrase 42", "usable_password": "true"},
    )  # fmt: skip
    assert role_of(get_user_model().objects.get(username="newbie")) == Role.VIEWER
