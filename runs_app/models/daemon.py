"""A daemon pipeline's supervision state (runs_app.worker.daemons keeps it running)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.utils import timezone

if TYPE_CHECKING:
    from runs_app.models.run import PipelineRun

# This many crashes within the crash window is a crash loop: restarts back off.
CRASH_LOOP = 5


class Daemon(models.Model):
    """One row per pipeline with `restart_on_crash`: what the supervisor knows and decided.

    The daemon's runs are ordinary runs (trigger "daemon"); this row remembers what is not
    in them: crashes in the last window (for the crash-loop backoff), when restart_interval
    next restarts it, whether an operator paused it, and why the supervisor stopped a run.
    """

    pipeline = models.OneToOneField(
        "pipelines_app.Pipeline", on_delete=models.CASCADE, related_name="daemon"
    )
    paused = models.BooleanField(
        default=False, help_text="Kept stopped by an operator (or by a cancel of its run)."
    )
    restarts = models.PositiveIntegerField(default=0)
    crash_times = models.JSONField(default=list, blank=True, help_text="Recent crashes.")
    start_not_before = models.DateTimeField(
        null=True, blank=True, help_text="Cooldown or crash-loop backoff until then."
    )
    next_restart_at = models.DateTimeField(null=True, blank=True)
    stopping_reason = models.CharField(
        max_length=60, blank=True, help_text="Why the supervisor is stopping its run."
    )
    accounted_run = models.ForeignKey(
        "runs_app.PipelineRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The last run whose end the supervisor has taken into account.",
    )
    last_exit = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"daemon {self.pipeline.name}"

    def state_in_words(self, active: PipelineRun | None, now: datetime | None = None) -> str:
        """The daemon's state for the pipeline page; `active`: its run, if one is on."""
        now = now or timezone.now()
        if self.paused:
            return "paused"
        if active is not None:
            return "running" if active.status == active.Status.RUNNING else "starting"
        if self.start_not_before and self.start_not_before > now:
            loop = len(self.crash_times) >= CRASH_LOOP
            return "crash loop: backing off" if loop else "waiting to restart"
        return "stopped"
