"""Sign-in providers set up in the admin (beside the ones from settings): GitHub, Google or
a generic OpenID Connect server. The client secret is stored encrypted and write-only."""

from __future__ import annotations

from allauth.socialaccount.models import SocialApp
from django.core.exceptions import ValidationError
from django.db import models

from fastflow_site.oidc import discovery_url
from secrets_app import crypto
from secrets_app.fields import EncryptedTextField


class SignInProvider(models.Model):
    class Kind(models.TextChoices):
        GITHUB = "github", "GitHub"
        GOOGLE = "google", "Google"
        OIDC = "openid_connect", "OpenID Connect (Keycloak, Authentik, Entra ID, …)"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    # OpenID Connect: the id in the callback URL (/accounts/oidc/<id>/login/callback/).
    provider_id = models.SlugField(
        max_length=60,
        blank=True,
        help_text="OpenID Connect only: a short id, e.g. keycloak (part of the callback URL).",
    )
    name = models.CharField(max_length=40, help_text='Shown on the button: "Sign in with …"')
    client_id = models.CharField(max_length=200)
    client_secret_encrypted = EncryptedTextField()
    server_url = models.URLField(
        blank=True,
        help_text="OpenID Connect only: the issuer, e.g. https://sso.example.com/realms/main "
        "(its /.well-known/openid-configuration is read).",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        verbose_name = "sign-in provider"
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "provider_id"], name="one_sign_in_provider_per_kind_and_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        if self.kind == self.Kind.OIDC and not (self.provider_id and self.server_url):
            raise ValidationError("OpenID Connect needs a provider id and the server URL.")
        if self.kind != self.Kind.OIDC:
            self.provider_id, self.server_url = "", ""

    def set_secret(self, value: str) -> None:
        self.client_secret_encrypted = crypto.encrypt(value)

    def as_social_app(self) -> SocialApp:
        """An unsaved allauth app for this provider, its secret decrypted in memory only."""
        settings = (
            {"server_url": discovery_url(self.server_url), "oauth_pkce_enabled": True}
            if self.kind == self.Kind.OIDC
            else {}
        )
        return SocialApp(
            provider=self.kind,
            provider_id=self.provider_id,
            name=self.name,
            client_id=self.client_id,
            secret=crypto.decrypt(self.client_secret_encrypted, f"the client secret of {self}")
            if self.client_secret_encrypted
            else "",
            settings=settings,
        )
