"""Signing in: linking and unlinking providers (never the last way in), TOTP two-factor
for password accounts, password sign-in switched off."""

from __future__ import annotations

import time

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from allauth.socialaccount.models import SocialAccount
from django.urls import reverse

from fastflow_site.models import AuditEntry
from secrets_app import crypto
from tests.fastflow_site.providers import install, sign_in

pytestmark = pytest.mark.django_db
Action = AuditEntry.Action


@pytest.fixture
def providers(monkeypatch):
    return install(monkeypatch)


def test_a_person_links_a_second_provider_and_signs_in_with_either(client, providers, viewer):
    client.force_login(viewer)
    response = sign_in(client, providers, "github", [("vic@example.com", True)], process="connect")
    assert response.status_code == 302
    response = sign_in(
        client, providers, "google", [("vic.private@example.net", True)], uid=7, process="connect"
    )
    assert {a.provider for a in SocialAccount.objects.filter(user=viewer)} == {"github", "google"}
    client.logout()
    sign_in(client, providers, "google", [("vic.private@example.net", True)], uid=7)
    assert client.session["_auth_user_id"] == str(viewer.pk)
    assert AuditEntry.objects.filter(action=Action.PROVIDER_LINKED).count() == 2


def test_unlinking_never_removes_the_last_way_in(client, providers, viewer, settings):
    client.force_login(viewer)
    sign_in(client, providers, "github", [("vic@example.com", True)], process="connect")
    github = SocialAccount.objects.get(user=viewer)
    connections = reverse("socialaccount_connections")
    # With a password, the provider can go.
    client.post(connections, {"account": github.pk})
    assert not SocialAccount.objects.filter(pk=github.pk).exists()
    assert AuditEntry.objects.filter(action=Action.PROVIDER_UNLINKED).exists()
    # Without a usable password, the last provider stays.
    sign_in(client, providers, "github", [("vic@example.com", True)], process="connect")
    viewer.set_unusable_password()
    viewer.save()
    client.force_login(viewer)
    github = SocialAccount.objects.get(user=viewer)
    page = client.post(connections, {"account": github.pk})
    assert SocialAccount.objects.filter(pk=github.pk).exists()
    assert "password" in page.content.decode().lower()


def test_with_password_sign_in_off_the_last_provider_cannot_go(client, providers, viewer, settings):
    client.force_login(viewer)
    sign_in(client, providers, "github", [("vic@example.com", True)], process="connect")
    settings.SOCIALACCOUNT_ONLY = True  # what PASSWORD_LOGIN=false sets
    settings.PASSWORD_LOGIN = False
    github = SocialAccount.objects.get(user=viewer)
    client.post(reverse("socialaccount_connections"), {"account": github.pk})
    assert SocialAccount.objects.filter(pk=github.pk).exists()


def test_password_sign_in_off_refuses_passwords_everywhere(client, viewer, settings):
    settings.SOCIALACCOUNT_ONLY = True
    settings.PASSWORD_LOGIN = False
    client.post(reverse("account_login"), {"login": "vic", "password": "pw-vic"})
    assert "_auth_user_id" not in client.session
    # the admin has no password form of its own either
    response = client.post("/admin/login/", {"username": "vic", "password": "pw-vic"})
    assert response.status_code == 302 and "_auth_user_id" not in client.session


def test_a_failed_sign_in_is_recorded_without_the_password(client, viewer):
    client.post(reverse("account_login"), {"login": "vic", "password": "wrong-password"})
    entry = AuditEntry.objects.get(action=Action.SIGN_IN_FAILED)
    assert entry.details["login"] == "vic" and entry.ip_address == "127.0.0.1"
    assert "wrong-password" not in str(entry.details)


def code_for(secret: str, offset: int = 0) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30 + offset))


def test_a_password_account_turns_on_totp_and_then_needs_a_code(
    client, viewer, settings, django_capture_on_commit_callbacks
):
    settings.MFA_TOTP_TOLERANCE = 1
    client.post(reverse("account_login"), {"login": "vic", "password": "pw-vic"})
    # Turning on two-factor asks for the password again, as any account-sensitive change.
    assert client.get(reverse("mfa_activate_totp")).url.startswith(
        reverse("account_reauthenticate")
    )
    client.post(reverse("account_reauthenticate"), {"password": "pw-vic"})
    client.get(reverse("mfa_activate_totp"))
    secret = client.session["mfa.totp.secret"]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("mfa_activate_totp"), {"code": code_for(secret)})
    assert response.status_code == 302
    totp = Authenticator.objects.get(user=viewer, type=Authenticator.Type.TOTP)
    stored = totp.data["secret"]
    assert stored != secret and crypto.decrypt(stored) == secret  # encrypted at rest
    assert AuditEntry.objects.filter(action=Action.MFA_ENABLED).exists()

    client.post(reverse("account_logout"))
    response = client.post(reverse("account_login"), {"login": "vic", "password": "pw-vic"})
    assert response.url == reverse("mfa_authenticate")
    assert "_auth_user_id" not in client.session  # the password alone is not enough
    client.post(reverse("mfa_authenticate"), {"code": "000000"})
    assert "_auth_user_id" not in client.session
    client.post(reverse("mfa_authenticate"), {"code": code_for(secret, 1)})
    assert client.session["_auth_user_id"] == str(viewer.pk)
