"""Due times a schedule did not fire, and why (visible on the pipeline page and the admin)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class ScheduleSkip(models.Model):
    """A due time that queued no run: the previous run of the schedule was still queued
    (a backlog would only grow), or the pipeline was paused."""

    class Reason(models.TextChoices):
        STILL_QUEUED = "still_queued", "the previous run was still queued"
        PAUSED = "paused", "the pipeline was disabled, invalid or missing"
        REFUSED = "refused", "the run was refused"

    schedule = models.ForeignKey(
        "pipelines_app.Schedule", on_delete=models.CASCADE, related_name="skips"
    )
    due_at = models.DateTimeField()
    reason = models.CharField(max_length=20, choices=Reason.choices)
    detail = models.CharField(max_length=300, blank=True)
    waiting_run = models.ForeignKey(
        "runs_app.PipelineRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The run that was still waiting in the queue.",
    )
    recorded_at = models.DateTimeField(default=timezone.now)

    KEEP_PER_SCHEDULE = 50

    class Meta:
        ordering = ["-due_at", "-id"]
        indexes = [models.Index(fields=["schedule", "-due_at"], name="skip_schedule_newest")]

    def __str__(self) -> str:
        return f"{self.schedule} skipped {self.due_at:%Y-%m-%d %H:%M:%S}"
