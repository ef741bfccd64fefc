"""Personal API tokens: shown once, stored hashed, scoped, revocable, optionally expiring."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from fastflow_site.models.people import hash_token

TOKEN_PREFIX = "fft_"  # noqa: S105 (a public prefix, not a secret)
# last_used_at is written at most this often per token (a busy script is not a write each call).
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read", "read: list and look"
        RUN = "run", "run: also start and cancel runs"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The public part of the token, shown in lists; the rest is only ever hashed.
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scope = models.CharField(max_length=4, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({TOKEN_PREFIX}{self.prefix}…, {self.scope})"

    @classmethod
    def make(cls, user, name: str, scope: str, expires_at=None) -> tuple[ApiToken, str]:
        """A new token and its text, which is shown once and never stored."""
        prefix = secrets.token_hex(4)
        text = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        token = cls.objects.create(
            user=user,
            name=name,
            prefix=prefix,
            token_hash=hash_token(text),
            scope=scope,
            expires_at=expires_at,
        )
        return token, text

    @classmethod
    def authenticate(cls, text: str) -> ApiToken | None:
        """The live token for this text (not revoked, not expired, its person active)."""
        if not text.startswith(TOKEN_PREFIX):
            return None
        token = (
            cls.objects.select_related("user")
            .filter(token_hash=hash_token(text), revoked_at__isnull=True, user__is_active=True)
            .first()
        )
        if token is None or token.is_expired:
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        return token

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        return "expired" if self.is_expired else "active"

    def allows(self, scope: str) -> bool:
        return scope == self.Scope.READ or self.scope == self.Scope.RUN

    def revoke(self) -> bool:
        done = ApiToken.objects.filter(pk=self.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        return done == 1
