"""What a run's end started: one row per downstream trigger that fired (or was skipped)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class ChainLink(models.Model):
    """A `downstream_triggers` entry whose condition held when its upstream run ended: the
    run it started, or why it started none (the target is missing, invalid, disabled, or
    the chain is too deep). Made in the transaction that ends the upstream run, at most
    once per trigger (unique), so a chain fires exactly once whatever crashes or races."""

    upstream = models.ForeignKey(
        "runs_app.PipelineRun", on_delete=models.CASCADE, related_name="chain_links"
    )
    trigger_index = models.PositiveSmallIntegerField(help_text="Its place in downstream_triggers.")
    target_name = models.CharField(max_length=100)
    condition = models.CharField(max_length=120, help_text="success, failure, route 'x'…")
    run_config_id = models.CharField(max_length=100, blank=True)
    downstream = models.OneToOneField(
        "runs_app.PipelineRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="started_by_link",
    )
    skipped_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["upstream", "trigger_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["upstream", "trigger_index"], name="chain_fires_once_per_trigger"
            )
        ]

    def __str__(self) -> str:
        outcome = f"started {self.downstream}" if self.downstream_id else "skipped"
        return f"{self.upstream} → {self.target_name}: {outcome}"
