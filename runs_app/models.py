"""A run is one attempt at executing a pipeline; its row answers every question about it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cached_property

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from pipelines_app.contract import RunSettings
from pipelines_app.models import Pipeline
from runs_app import live
from runs_app.logs import log_path_for


def with_last_run(pipelines: models.QuerySet[Pipeline]) -> models.QuerySet[Pipeline]:
    """Pipelines annotated with their newest run: last_run_status, _at, _public_id."""
    newest = PipelineRun.objects.filter(pipeline=models.OuterRef("pk")).order_by(
        "-queued_at", "-id"
    )
    return pipelines.annotate(
        last_run_status=models.Subquery(newest.values("status")[:1]),
        last_run_at=models.Subquery(newest.values("queued_at")[:1]),
        last_run_public_id=models.Subquery(newest.values("public_id")[:1]),
    )


class RunRefused(Exception):
    """A run cannot be started; the message says why, for people."""


class PipelineRun(models.Model):
    """One attempt. A retry is a new row pointing at the run it retries.

    State changes are conditional UPDATEs that name the state they leave, so two processes
    can never both claim, take or finish the same run (the loser's UPDATE matches 0 rows).
    """

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
        SECRET = "secret", "a secret does not decrypt"
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
    schedule = models.ForeignKey(
        "pipelines_app.Schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="The schedule (or webhook key of one) that started it; its overrides apply.",
    )
    config_id = models.CharField(
        "schedule id", max_length=100, blank=True, help_text="schedules[].id whose overrides apply"
    )
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The due time a schedule fired it for."
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )

    queued_at = models.DateTimeField(default=timezone.now)
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="A retry waits in the queue until this moment."
    )
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="Left the queue.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="Container started.")
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

    route = models.CharField(
        max_length=200, blank=True, help_text="What the run wrote to FASTFLOW_ROUTE_FILE."
    )
    # Who executes it: "host:pid" of the worker process, kept alive by heartbeats, so a
    # restarted or surviving worker can tell a followed run from an orphaned one.
    worker_id = models.CharField(max_length=120, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

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
        return f"{self.pipeline.name} #{self.short_id} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("runs_app:detail", args=[self.public_id])

    @property
    def short_id(self) -> str:
        return str(self.public_id)[:8]

    # --- starting --------------------------------------------------------------------------

    @classmethod
    def enqueue(
        cls,
        pipeline: Pipeline,
        *,
        trigger: str,
        user=None,
        parameters: dict[str, str] | None = None,
        retry_of: PipelineRun | None = None,
        not_before=None,
        schedule=None,
        scheduled_for=None,
    ) -> PipelineRun:
        """Queue a run (a row first); the dispatcher starts it when a slot is free."""
        if pipeline.state == Pipeline.State.MISSING:
            raise RunRefused(f"{pipeline.name} cannot run: its folder is gone")
        if not pipeline.is_valid:
            raise RunRefused(
                f"{pipeline.name} cannot run until its configuration is fixed: "
                + "; ".join(pipeline.error_messages)
            )
        run = cls(
            pipeline=pipeline,
            trigger=trigger,
            triggered_by=user if user is not None and user.is_authenticated else None,
            parameters=dict(parameters or {}),
            retry_of=retry_of,
            attempt=retry_of.attempt + 1 if retry_of else 1,
            not_before=not_before,
            schedule=schedule if schedule is not None else getattr(retry_of, "schedule", None),
            config_id=(schedule.config_id if schedule else getattr(retry_of, "config_id", "")),
            scheduled_for=scheduled_for,
        )
        run.log_path = str(log_path_for(run.public_id))
        run.save()
        from runs_app.queue import dispatch

        transaction.on_commit(dispatch)
        return run

    def rerun(self, user=None) -> PipelineRun:
        """A new manual run of the same pipeline with the same parameters."""
        return PipelineRun.enqueue(
            self.pipeline,
            trigger=self.Trigger.MANUAL,
            user=user,
            parameters=self.parameters,
            schedule=self.schedule,
        )

    def request_cancel(self) -> str:
        """Cancel: a queued run at once, a running one through its follower.

        Returns "cancelled", "stopping" or "finished" (nothing left to cancel).
        """
        now = timezone.now()
        queued = PipelineRun.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.CANCELLED, finished_at=now, cancel_requested_at=now
        )
        if queued:
            self.refresh_from_db()
            live.status_changed(self.public_id)
            return "cancelled"
        running = PipelineRun.objects.filter(
            pk=self.pk, status=self.Status.RUNNING, cancel_requested_at__isnull=True
        ).update(cancel_requested_at=now)
        self.refresh_from_db()
        if running or self.status == self.Status.RUNNING:
            return "stopping"
        return "finished"

    # --- the worker's side -------------------------------------------------------------------

    @classmethod
    def take(cls, pk: int, worker_id: str, orphaned_workers: list[str] | None = None) -> bool:
        """Make `worker_id` the one process that executes a claimed run.

        Succeeds for a run nobody follows yet, or whose follower stopped heartbeating (or is
        known dead), so a redelivered task never runs a run twice.
        """
        stale = timezone.now() - timedelta(seconds=settings.RUN_HEARTBEAT_TIMEOUT)
        free = Q(worker_id="") | Q(heartbeat_at__lt=stale)
        if orphaned_workers:
            free |= Q(worker_id__in=orphaned_workers)
        return bool(
            cls.objects.filter(free, pk=pk, status=cls.Status.RUNNING)
            .exclude(worker_id=worker_id)
            .update(worker_id=worker_id, heartbeat_at=timezone.now())
        )

    def beat(self) -> bool:
        """Heartbeat of the follower; False when another worker has taken the run over."""
        return bool(
            PipelineRun.objects.filter(
                pk=self.pk, worker_id=self.worker_id, status=self.Status.RUNNING
            ).update(heartbeat_at=timezone.now())
        )

    def cancel_is_requested(self) -> bool:
        return PipelineRun.objects.filter(pk=self.pk, cancel_requested_at__isnull=False).exists()

    def finish(self, status: str, **fields) -> bool:
        """Leave RUNNING for a final status, once; a cancel request always wins."""
        assert status in self.FINAL_STATUSES
        fields.setdefault("finished_at", timezone.now())
        running = PipelineRun.objects.filter(pk=self.pk, status=self.Status.RUNNING)
        changed = running.filter(cancel_requested_at__isnull=True).update(status=status, **fields)
        if not changed:
            fields.update(failure_reason="", error_message="cancelled on request")
            changed = running.update(status=self.Status.CANCELLED, **fields)
        self.refresh_from_db()
        return bool(changed)

    @cached_property
    def run_settings(self) -> RunSettings:
        """The pipeline's settings with its schedule's overrides on top."""
        base = self.pipeline.spec.run
        return base.overridden_by(self.schedule.settings) if self.schedule_id else base

    @property
    def lateness(self) -> timedelta | None:
        """How long after its due time a scheduled run left the queue."""
        if not self.scheduled_for:
            return None
        return (self.claimed_at or self.queued_at) - self.scheduled_for

    @property
    def queue_position(self) -> int | None:
        """1 for the next queued run to start, None when not queued."""
        if self.status != self.Status.QUEUED:
            return None
        ahead = PipelineRun.objects.filter(status=self.Status.QUEUED).filter(
            Q(queued_at__lt=self.queued_at) | Q(queued_at=self.queued_at, id__lt=self.id)
        )
        return ahead.count() + 1

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def duration(self):
        """Wall time from start to finish (or until now while running)."""
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at
