"""The audit log: an append-only record of who did what, when and from where."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    class Action(models.TextChoices):
        SIGN_IN = "sign_in", "signed in"
        SIGN_OUT = "sign_out", "signed out"
        SIGN_IN_FAILED = "sign_in_failed", "sign-in failed"
        SIGN_IN_REFUSED = "sign_in_refused", "sign-in refused (not invited)"
        RUN_STARTED = "run_started", "started a run"
        RUN_CANCELLED = "run_cancelled", "cancelled a run"
        RUN_RERUN = "run_rerun", "ran again"
        DAEMON_PAUSED = "daemon_paused", "paused a daemon"
        DAEMON_RESUMED = "daemon_resumed", "resumed a daemon"
        NODE_DRAINED = "node_drained", "drained a worker node"
        NODE_RESUMED = "node_resumed", "let a worker node take runs again"
        SCHEDULE_CREATED = "schedule_created", "created a schedule"
        SCHEDULE_CHANGED = "schedule_changed", "changed a schedule"
        SCHEDULE_DELETED = "schedule_deleted", "deleted a schedule"
        WEBHOOK_KEY_CREATED = "webhook_key_created", "made a webhook key"
        WEBHOOK_KEY_REVOKED = "webhook_key_revoked", "revoked a webhook key"
        SECRET_CREATED = "secret_created", "created a secret"
        SECRET_REPLACED = "secret_replaced", "replaced a secret"
        SECRET_CHANGED = "secret_changed", "changed a secret's description or scope"
        SECRET_DELETED = "secret_deleted", "deleted a secret"
        PARAMETER_CREATED = "parameter_created", "created a parameter"
        PARAMETER_CHANGED = "parameter_changed", "changed a parameter"
        PARAMETER_DELETED = "parameter_deleted", "deleted a parameter"
        REPOSITORY_CHANGED = "repository_changed", "changed the repository"
        SYNC_REQUESTED = "sync_requested", "asked for a sync"
        DEPLOY_KEY_MADE = "deploy_key_made", "made an SSH deploy key"
        HOST_KEY_FORGOTTEN = "host_key_forgotten", "forgot the pinned SSH host key"
        INVITATION_CREATED = "invitation_created", "invited someone"
        INVITATION_REVOKED = "invitation_revoked", "revoked an invitation"
        INVITATION_ACCEPTED = "invitation_accepted", "accepted an invitation"
        JOIN_REQUESTED = "join_requested", "asked to join"
        JOIN_APPROVED = "join_approved", "approved a join request"
        JOIN_DENIED = "join_denied", "denied a join request"
        PERSON_JOINED = "person_joined", "joined"
        ROLE_CHANGED = "role_changed", "changed a role"
        PERSON_DEACTIVATED = "person_deactivated", "deactivated a person"
        PERSON_REACTIVATED = "person_reactivated", "reactivated a person"
        TOKEN_CREATED = "token_created", "made an API token"
        TOKEN_REVOKED = "token_revoked", "revoked an API token"
        PROVIDER_LINKED = "provider_linked", "linked a sign-in provider"
        PROVIDER_UNLINKED = "provider_unlinked", "unlinked a sign-in provider"
        MFA_ENABLED = "mfa_enabled", "turned on two-factor authentication"
        MFA_DISABLED = "mfa_disabled", "turned off two-factor authentication"
        ADMIN_CHANGE = "admin_change", "changed a record in the admin"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries",
    )
    # Kept as text too: the entry still says who it was when the account is gone.
    actor_name = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=60, blank=True, db_index=True)
    object_id = models.CharField(max_length=200, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    via = models.CharField(max_length=20, blank=True, help_text="web, admin, api or command")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name or 'system'} {self.action}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("Audit entries are append-only: an entry is never changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit entries are append-only: only retention removes them.")

    @classmethod
    def prune(cls, days: int | None = None) -> int:
        """Remove entries older than AUDIT_RETENTION_DAYS (None: keep all); how many went."""
        days = settings.AUDIT_RETENTION_DAYS if days is None else days
        if not days:
            return 0
        cutoff = timezone.now() - timedelta(days=days)
        # A queryset delete, not Model.delete (which refuses): retention is the one way out.
        removed, _ = cls.objects.filter(at__lt=cutoff).delete()
        return removed
