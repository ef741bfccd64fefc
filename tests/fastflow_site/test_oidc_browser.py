"""Sign-in end to end in Chromium, against a real OpenID Connect provider
(django-oauth-toolkit, started as its own server on loopback): the redirect, the provider's
sign-in and consent, the code exchanged for tokens (PKCE), the account made by an
invitation, its role applied."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.urls import reverse

from fastflow_site.models import AuditEntry, Invitation, SignInProvider
from fastflow_site.roles import Role, role_of
from runs_app.follow import wait_for
from tests.runs_app.conftest import free_port
from tests.runs_app.test_worker import kill_group

pytestmark = pytest.mark.django_db(transaction=True)
BASE_DIR = Path(django_settings.BASE_DIR)
CLIENT_ID, CLIENT_SECRET = "fastflow-test-client", "fastflow-test-secret-0123456789"


@pytest.fixture
def identity_provider(tmp_path, live_server):
    """The provider at http://127.0.0.1:<port>/o with one person, olivia; yields its URL."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "idp-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.oidc_provider.settings",
        "OIDC_PROVIDER_DB": str(tmp_path / "idp.sqlite3"),
        "OIDC_PROVIDER_KEY": str(tmp_path / "idp-key.pem"),
    }
    callback = f"{live_server.url}/accounts/oidc/testidp/login/callback/"
    subprocess.run(
        [sys.executable, "-m", "tests.oidc_provider.setup_provider", "olivia", "pw-idp",
         "olivia@example.com", callback, CLIENT_ID, CLIENT_SECRET],
        cwd=BASE_DIR, env=environment, check=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload",
         "--nothreading"],
        cwd=BASE_DIR, env=environment, stdout=open(tmp_path / "idp.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    issuer = f"http://127.0.0.1:{port}/o"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration") as reply:
                return reply.status == 200
        except OSError:
            return False

    assert wait_for(answers, timeout=30), (tmp_path / "idp.log").read_text()
    yield issuer
    kill_group(server)


@pytest.fixture
def oidc_sign_in(identity_provider, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop in this thread
    provider = SignInProvider(
        kind=SignInProvider.Kind.OIDC,
        provider_id="testidp",
        name="Test IdP",
        client_id=CLIENT_ID,
        server_url=identity_provider,
    )
    provider.set_secret(CLIENT_SECRET)
    provider.save()


def sign_in_through_the_provider(page, live_server) -> None:
    page.goto(f"{live_server.url}/pipelines/")
    assert "/accounts/login/" in page.url
    page.click("text=Sign in with Test IdP")
    page.wait_for_url("http://127.0.0.1:*/accounts/login/**")  # the provider's own sign-in
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "pw-idp")
    page.click("#idp-sign-in")
    page.wait_for_url("http://127.0.0.1:*/o/authorize/**")  # consent
    assert "Authorize Fast-Flow?" in page.content()
    page.click("input[name=allow]")


def test_an_invited_person_signs_in_through_openid_connect(
    oidc_sign_in, browser, live_server, admin_user
):
    Invitation.make("olivia@example.com", Role.OPERATOR, created_by=admin_user)
    page = browser.new_page()
    sign_in_through_the_provider(page, live_server)
    page.wait_for_url(f"{live_server.url}/pipelines/")
    assert "Pipelines" in page.content()
    olivia = get_user_model().objects.get(email="olivia@example.com")
    assert role_of(olivia) == Role.OPERATOR
    assert olivia.socialaccount_set.get().provider == "testidp"
    assert Invitation.objects.get().accepted_by == olivia
    joined = AuditEntry.objects.get(action=AuditEntry.Action.PERSON_JOINED)
    assert joined.details["provider"] == "testidp" and joined.details["reason"] == "invitation"
    # the operator's menu, and no admin-only pages
    assert page.locator("nav >> text=Admin").count() == 1
    assert page.locator("nav >> text=People").count() == 0
    page.goto(f"{live_server.url}{reverse('people')}")
    assert (
        "403" in page.title()
        or page.locator("text=Forbidden").count() > 0
        or ("People" not in page.locator("h1").all_inner_texts())
    )


def test_without_an_invitation_the_provider_sign_in_ends_at_ask_an_admin(
    oidc_sign_in, browser, live_server
):
    page = browser.new_page()
    sign_in_through_the_provider(page, live_server)
    page.wait_for_selector("#not-invited")
    assert "olivia@example.com" in page.inner_text("#not-invited")
    assert not get_user_model().objects.filter(email="olivia@example.com").exists()
