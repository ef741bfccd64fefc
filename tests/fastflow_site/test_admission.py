"""Who may come in: sign-in through allauth with GitHub and Google (their servers answered
locally), invitations, the domain allow-list, join requests, the initial admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from fastflow_site.models import AuditEntry, Invitation, JoinRequest
from fastflow_site.roles import Role, role_of
from tests.fastflow_site.providers import install, sign_in

pytestmark = pytest.mark.django_db
Action = AuditEntry.Action


@pytest.fixture
def providers(monkeypatch):
    return install(monkeypatch)


def signed_in_as(client):
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id) if user_id else None


def test_the_sign_in_page_shows_exactly_the_configured_providers(client, providers, settings):
    html = client.get(reverse("account_login")).content.decode()
    assert "Sign in with GitHub" in html and "Sign in with Google" in html
    assert "Single sign-on" not in html  # no OpenID Connect provider configured
    assert 'name="password"' in html
    settings.PASSWORD_LOGIN = False
    html = client.get(reverse("account_login")).content.decode()
    assert 'name="password"' not in html


def test_no_provider_and_no_password_says_what_to_set(client, settings):
    settings.PASSWORD_LOGIN = False
    html = client.get(reverse("account_login")).content.decode()
    assert "No way to sign in is set up" in html and "OIDC_CLIENT_ID" in html


@pytest.mark.parametrize("provider", ["github", "google"])
def test_an_invitation_brings_a_person_in_with_its_role(client, providers, admin_user, provider):
    invitation, _ = Invitation.make("Alice@Example.com", Role.OPERATOR, created_by=admin_user)
    response = sign_in(client, providers, provider, [("alice@example.com", True)])
    assert response.status_code == 302 and response.url == "/"
    alice = signed_in_as(client)
    assert alice.email == "alice@example.com" and role_of(alice) == Role.OPERATOR
    assert alice.is_staff and not alice.is_superuser
    invitation.refresh_from_db()
    assert invitation.accepted_by == alice and invitation.state == "accepted"
    assert SocialAccount.objects.get(user=alice).provider == provider
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {Action.PERSON_JOINED, Action.INVITATION_ACCEPTED, Action.SIGN_IN} <= actions
    assert client.get(reverse("pipelines_app:list")).status_code == 200


def test_an_uninvited_person_is_told_to_ask_an_admin(client, providers):
    response = sign_in(client, providers, "github", [("mallory@example.com", True)])
    assert response.status_code == 200
    html = response.content.decode()
    assert "You are not on this instance yet" in html and "mallory@example.com" in html
    assert signed_in_as(client) is None
    assert not get_user_model().objects.exists()
    refused = AuditEntry.objects.get(action=Action.SIGN_IN_REFUSED)
    assert refused.details["verified"] == ["mallory@example.com"]


def test_only_verified_addresses_count(client, providers, admin_user):
    Invitation.make("alice@example.com", Role.VIEWER, created_by=admin_user)
    response = sign_in(
        client, providers, "github", [("other@example.com", True), ("alice@example.com", False)]
    )
    assert "You are not on this instance yet" in response.content.decode()
    assert signed_in_as(client) is None
    response = sign_in(client, providers, "google", [("alice@example.com", False)])
    assert signed_in_as(client) is None


def test_an_expired_or_revoked_invitation_lets_nobody_in(client, providers, admin_user):
    expired, _ = Invitation.make("alice@example.com", Role.VIEWER, created_by=admin_user)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(1))
    revoked, _ = Invitation.make("bob@example.com", Role.VIEWER, created_by=admin_user)
    assert revoked.revoke()
    sign_in(client, providers, "github", [("alice@example.com", True)])
    assert signed_in_as(client) is None
    sign_in(client, providers, "github", [("bob@example.com", True)], uid=2, login="bob")
    assert signed_in_as(client) is None


def test_an_invitation_link_works_once_with_a_password(client, admin_user):
    _, token = Invitation.make("carol@example.com", Role.VIEWER, created_by=admin_user)
    link = reverse("invitation", args=[token])
    page = client.get(link).content.decode()
    assert "Join Fast-Flow as viewer" in page and "carol@example.com" in page
    form = {
        "username": "carol",
        "password1": "a long passphrase 42",
        "password2": "a long passphrase 42",
    }
    response = client.post(link, form)
    assert response.status_code == 302
    carol = signed_in_as(client)
    assert carol.username == "carol" and carol.email == "carol@example.com"
    assert role_of(carol) == Role.VIEWER
    assert carol.emailaddress_set.get().verified
    client.logout()
    again = client.post(link, {**form, "username": "carol2"})
    assert "This invitation cannot be used" in again.content.decode()
    assert not get_user_model().objects.filter(username="carol2").exists()


def test_an_expired_invitation_link_says_so(client, admin_user):
    invitation, token = Invitation.make("dan@example.com", Role.VIEWER, created_by=admin_user)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now())
    page = client.get(reverse("invitation", args=[token])).content.decode()
    assert "This invitation cannot be used" in page and "It was expired." in page
    assert "cannot be used" in client.get(reverse("invitation", args=["nonsense"])).content.decode()


def test_password_accounts_are_not_offered_when_password_sign_in_is_off(
    client, admin_user, settings
):
    settings.PASSWORD_LOGIN = False
    _, token = Invitation.make("erin@example.com", Role.VIEWER, created_by=admin_user)
    page = client.get(reverse("invitation", args=[token])).content.decode()
    assert 'name="password1"' not in page


def test_an_allowed_domain_joins_as_viewer(client, providers, settings):
    settings.ALLOWED_EMAIL_DOMAINS = ["example.org"]
    sign_in(client, providers, "google", [("frank@Example.org", True)])
    frank = signed_in_as(client)
    assert frank is not None and role_of(frank) == Role.VIEWER and not frank.is_staff
    client.logout()
    sign_in(client, providers, "google", [("gina@example.org.evil.com", True)], uid=2)
    assert signed_in_as(client) is None


def test_the_initial_admin_email_becomes_admin_on_its_first_sign_in(client, providers, settings):
    settings.INITIAL_ADMIN_EMAIL = "boss@example.com"
    sign_in(client, providers, "github", [("boss@example.com", True)], login="boss")
    boss = signed_in_as(client)
    assert role_of(boss) == Role.ADMIN and boss.is_superuser


def test_a_join_request_is_approved_by_an_admin(client, providers, settings, admin_user):
    settings.JOIN_REQUESTS = True
    settings.MAIL_CONFIGURED = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    refused = sign_in(client, providers, "github", [("hank@example.com", True)], login="hank")
    assert "Ask to join" in refused.content.decode()
    asked = client.post(reverse("join_request"), {"message": "I run the nightly import"})
    assert "Your request is with the admins" in asked.content.decode()
    request = JoinRequest.objects.get()
    assert (request.email, request.provider, request.state) == (
        "hank@example.com",
        "github",
        "waiting",
    )
    assert mail.outbox[-1].to == ["ada@example.com"]  # the admins are told

    admin = client.__class__()
    admin.force_login(admin_user)
    page = admin.get(reverse("people")).content.decode()
    assert "hank@example.com" in page and "I run the nightly import" in page
    admin.post(
        reverse("join_request_decide", args=[request.pk]),
        {"decision": "approve", "role": "operator"},
    )
    request.refresh_from_db()
    assert request.state == "approved" and request.invitation.role == Role.OPERATOR
    assert mail.outbox[-1].to == ["hank@example.com"]

    sign_in(client, providers, "github", [("hank@example.com", True)], login="hank")
    hank = signed_in_as(client)
    assert role_of(hank) == Role.OPERATOR
    actions = list(AuditEntry.objects.values_list("action", flat=True))
    assert Action.JOIN_REQUESTED in actions and Action.JOIN_APPROVED in actions


def test_join_requests_are_off_by_default(client, providers):
    refused = sign_in(client, providers, "github", [("ivy@example.com", True)], login="ivy")
    assert "Ask to join" not in refused.content.decode()
    assert client.post(reverse("join_request")).status_code == 400
    assert not JoinRequest.objects.exists()


def test_a_denied_join_request_lets_nobody_in(client, providers, settings, admin_user):
    settings.JOIN_REQUESTS = True
    sign_in(client, providers, "github", [("jon@example.com", True)], login="jon")
    client.post(reverse("join_request"))
    request = JoinRequest.objects.get()
    admin = client.__class__()
    admin.force_login(admin_user)
    admin.post(reverse("join_request_decide", args=[request.pk]), {"decision": "deny"})
    request.refresh_from_db()
    assert request.state == "denied" and request.invitation is None
    sign_in(client, providers, "github", [("jon@example.com", True)], login="jon")
    assert signed_in_as(client) is None
