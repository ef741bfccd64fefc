"""A run is one attempt at executing a pipeline; its row answers every question about it."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from pipelines_app.models import Pipeline


class PipelineRun(models.Model):
    """One attempt. A retry is a new row pointing at the run it retries."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"
        TIMED_OUT = "timed_out", "timed out"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)
    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.TIMED_OUT)

    class FailureReason(models.TextChoices):
        EXIT_CODE = "exit_code", "non-zero exit code"
        OUT_OF_MEMORY = "out_of_memory", "out of memory"
        DEPENDENCY_INSTALL = "dependency_install", "dependency install failed"
        IMAGE_MISSING = "image_missing", "worker image missing"
        LOST = "lost", "lost (container vanished)"
        INTERNAL_ERROR = "internal_error", "internal error"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "manual"
        SCHEDULE = "schedule", "schedule"
        WEBHOOK = "webhook", "webhook"
        CHAIN = "chain", "chain (upstream pipeline)"
        RETRY = "retry", "retry"
        API = "api", "API"
        CLI = "cli", "command line"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    failure_reason = models.CharField(max_length=20, choices=FailureReason.choices, blank=True)
    error_message = models.TextField(blank=True, help_text="Why it failed, in words.")
    exit_code = models.IntegerField(null=True, blank=True)

    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="triggered_runs",
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    setup_duration = models.DurationField(
        null=True, blank=True, help_text="Container start until the pipeline's code starts."
    )

    uv_version = models.CharField(max_length=40, blank=True)
    git_commit = models.CharField(max_length=40, blank=True)
    container_id = models.CharField(max_length=64, blank=True)
    # Never secret values: the environment without secrets, and only the names of secrets.
    environment = models.JSONField(default=dict, blank=True)
    secret_env_names = models.JSONField(default=list, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    log_path = models.CharField(max_length=1024, blank=True)

    peak_cpu_percent = models.FloatField(null=True, blank=True)
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True)
    limit_warnings = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [
            # Each index ends with the ordering's tie-breaker, so lists need no extra sort.
            # runs of pipeline X, newest first
            models.Index(fields=["pipeline", "-queued_at", "-id"], name="run_pipeline_newest"),
            # runs by status; for queued runs also the FIFO order of the queue
            models.Index(fields=["status", "queued_at", "id"], name="run_status_fifo"),
            # runs in a time window, newest first
            models.Index(fields=["-queued_at", "-id"], name="run_newest"),
            # retention: finished before a moment
            models.Index(fields=["finished_at"], name="run_finished"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name} #{str(self.public_id)[:8]} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def duration(self):
        """Wall time from start to finish (or until now while running)."""
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at
