"""Notifications: channels (apprise URLs, stored encrypted), rules routing events to them,
incidents grouping a run of failures, and each message with its deliveries."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from pipelines_app.contract import NOTIFY_EVENTS
from pipelines_app.models import Pipeline
from secrets_app import crypto
from secrets_app.fields import EncryptedTextField

# Events a rule can name: the pipelines' own, and the instance's.
EVENTS = (*NOTIFY_EVENTS, "sync_failed")
# A channel whose last this many deliveries failed is flagged as failing.
FAILING_AFTER = 3


class Channel(models.Model):
    class Origin(models.TextChoices):
        ADMIN = "admin", "the admin"
        SETTINGS = "settings", "NOTIFY_URLS"

    name = models.SlugField(max_length=60, unique=True, help_text="What rules and pipeline.json "
                            '"notify" call it, e.g. ops-slack.')  # fmt: skip
    # An apprise URL (mailto://, slack://, msteams://, discord://, mmost://, json://, ...),
    # encrypted: it holds tokens and passwords.
    url_encrypted = EncryptedTextField()
    origin = models.CharField(max_length=8, choices=Origin.choices, default=Origin.ADMIN)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    failures_total = models.BigIntegerField(default=0, help_text="Every failed attempt.")
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def set_url(self, url: str) -> None:
        self.url_encrypted = crypto.encrypt(url.strip())

    def url(self) -> str:
        return crypto.decrypt(self.url_encrypted, f"the URL of channel {self.name}")

    @property
    def kind(self) -> str:
        """The service (the URL's scheme), shown instead of the URL and its tokens."""
        try:
            return urlsplit(self.url()).scheme or "?"
        except crypto.DecryptionError:
            return "? (does not decrypt)"

    @property
    def is_failing(self) -> bool:
        return self.consecutive_failures >= FAILING_AFTER


class RuleQuerySet(models.QuerySet):
    def for_event(self, event: str, pipeline: Pipeline | None):
        rules = [r for r in self.filter(enabled=True) if event in r.events]
        return [r for r in rules if r.covers(pipeline)]


class Rule(models.Model):
    name = models.CharField(max_length=100)
    origin = models.CharField(
        max_length=8, choices=Channel.Origin.choices, default=Channel.Origin.ADMIN
    )
    enabled = models.BooleanField(default=True)
    events = models.JSONField(default=list, help_text=f"Any of: {', '.join(EVENTS)}.")
    pipelines = models.JSONField(
        default=list, blank=True, help_text="Pipeline names; empty (and no tags): every pipeline."
    )
    tags = models.JSONField(default=list, blank=True, help_text="Pipelines with any of these tags.")
    channels = models.ManyToManyField(Channel, related_name="rules")

    objects = RuleQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def covers(self, pipeline: Pipeline | None) -> bool:
        if not self.pipelines and not self.tags:
            return True
        if pipeline is None:
            return False  # instance events (a failed sync) go to rules for every pipeline
        return pipeline.name in self.pipelines or bool(set(self.tags) & set(pipeline.tags))


class Incident(models.Model):
    """A run of failures of one thing (a pipeline's runs, its daemon, its warm-up, the
    repository's syncs): told at once, then with growing pauses, then once recovered."""

    class Kind(models.TextChoices):
        FAILING = "failing", "runs failing"
        CRASH_LOOP = "crash_loop", "daemon crash loop"
        WARMUP = "warmup", "warm-up failing"
        SYNC = "sync", "sync failing"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    subject = models.CharField(max_length=100, help_text="The pipeline's name, or repository.")
    pipeline = models.ForeignKey(
        Pipeline, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents"
    )
    opened_at = models.DateTimeField(default=timezone.now)
    last_event_at = models.DateTimeField(default=timezone.now)
    events_count = models.PositiveIntegerField(default=1)
    told_count = models.PositiveIntegerField(default=1)
    next_tell_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=Q(closed_at__isnull=True),
                name="one_open_incident_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject}: {self.get_kind_display()}"

    @staticmethod
    def pause_after(told_count: int) -> timedelta:
        """How long to stay quiet after the n-th message: doubling, up to a cap."""
        minutes = settings.NOTIFY_REPEAT_MINUTES * 2 ** max(0, told_count - 1)
        return timedelta(minutes=min(minutes, settings.NOTIFY_REPEAT_MAX_MINUTES))


class Notification(models.Model):
    event = models.CharField(max_length=20)
    pipeline = models.ForeignKey(
        Pipeline, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    run = models.ForeignKey(
        "runs_app.PipelineRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notifications",
    )
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    title = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "waiting to be sent"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed (gave up)"

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.ForeignKey(
        Channel, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel_name = models.CharField(max_length=60)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.channel_name}: {self.status}"
