"""Who may come in: invitations (single use, expiring) and join requests admins decide on."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from fastflow_site.roles import Role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class InvitationQuerySet(models.QuerySet):
    def pending(self) -> InvitationQuerySet:
        return self.filter(accepted_at__isnull=True, revoked_at__isnull=True).filter(
            expires_at__gt=timezone.now()
        )

    def for_emails(self, emails: list[str]) -> InvitationQuerySet:
        return self.filter(email__in=[email.lower() for email in emails])


class Invitation(models.Model):
    email = models.EmailField(help_text="Only a sign-in with this verified address accepts it.")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} as {self.role}"

    @classmethod
    def make(cls, email: str, role: str, created_by=None, days: int | None = None):
        """A new invitation and its token (only its hash is stored: the link is shown once)."""
        token = secrets.token_urlsafe(32)
        days = settings.INVITATION_DAYS if days is None else days
        invitation = cls.objects.create(
            email=email.strip().lower(),
            role=role,
            token_hash=hash_token(token),
            created_by=created_by,
            expires_at=timezone.now() + timedelta(days=days),
        )
        return invitation, token

    @classmethod
    def from_token(cls, token: str) -> Invitation | None:
        return cls.objects.filter(token_hash=hash_token(token)).first()

    @staticmethod
    def link(token: str) -> str:
        return settings.BASE_URL + reverse("invitation", args=[token])

    @property
    def state(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"

    @property
    def is_pending(self) -> bool:
        return self.state == "pending"

    def accept(self, user) -> bool:
        """Use it up for `user`; False when it was used, revoked or expired meanwhile."""
        now = timezone.now()
        used = (
            Invitation.objects.pending()
            .filter(pk=self.pk)
            .update(accepted_at=now, accepted_by=user)
        )
        if used:
            self.accepted_at, self.accepted_by = now, user
        return used == 1

    def revoke(self) -> bool:
        revoked = Invitation.objects.pending().filter(pk=self.pk).update(revoked_at=timezone.now())
        return revoked == 1


class JoinRequest(models.Model):
    class State(models.TextChoices):
        WAITING = "waiting", "waiting"
        APPROVED = "approved", "approved"
        DENIED = "denied", "denied"

    email = models.EmailField(help_text="Verified by the sign-in provider.")
    name = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=60, blank=True)
    message = models.CharField(max_length=500, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=10, choices=State.choices, default=State.WAITING)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    invitation = models.ForeignKey(
        Invitation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["email"],
                condition=models.Q(state="waiting"),
                name="one_waiting_join_request_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"{self.email} ({self.state})"

    def decide(self, approve: bool, by, role: str = Role.VIEWER) -> Invitation | None:
        """Approve (an invitation for the address, accepted at its next sign-in) or deny."""
        state = self.State.APPROVED if approve else self.State.DENIED
        decided = JoinRequest.objects.filter(pk=self.pk, state=self.State.WAITING).update(
            state=state, decided_at=timezone.now(), decided_by=by
        )
        if not decided:
            return None
        self.state = state
        if approve:
            self.invitation, _ = Invitation.make(self.email, role, created_by=by)
            self.save(update_fields=["invitation"])
            return self.invitation
        return None
