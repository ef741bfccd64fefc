"""The steps of a models run: one row per model, seed, snapshot or test the engine ran."""

from __future__ import annotations

from django.db import models


class RunStep(models.Model):
    """A node of a models run (dbt or FastFlowTransform), as its engine reported it: live
    while the run goes, completed from the engine's artifacts at the end of each command
    (runs_app.steps records them; the run page shows them)."""

    class Kind(models.TextChoices):
        MODEL = "model", "model"
        SEED = "seed", "seed"
        SNAPSHOT = "snapshot", "snapshot"
        TEST = "test", "test"

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        SUCCESS = "success", "success"
        PASS = "pass", "passed"
        WARN = "warn", "warning"
        FAIL = "fail", "failed"
        ERROR = "error", "error"
        SKIPPED = "skipped", "skipped"
        NOT_RUN = "not_run", "not run"

    FAILED = (Status.FAIL, Status.ERROR)

    run = models.ForeignKey("runs_app.PipelineRun", on_delete=models.CASCADE, related_name="steps")
    node_id = models.CharField(max_length=300, help_text="The engine's id (dbt's unique_id).")
    name = models.CharField(max_length=300)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    position = models.PositiveIntegerField(default=0, help_text="Order in which it was first seen.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(null=True, blank=True, help_text="How long the engine took.")
    rows = models.BigIntegerField(null=True, blank=True, help_text="Rows affected.")
    failures = models.IntegerField(null=True, blank=True, help_text="A test's failing rows.")
    message = models.TextField(blank=True)
    tested_model = models.CharField(max_length=300, blank=True)
    tested_column = models.CharField(max_length=300, blank=True)
    depends_on = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "node_id"], name="one_step_per_node"),
        ]
        indexes = [models.Index(fields=["node_id", "-id"], name="step_node_newest")]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.status}"

    @property
    def failed(self) -> bool:
        return self.status in self.FAILED

    @property
    def took(self) -> float | None:
        """Seconds: the engine's own figure, else from its start and end."""
        if self.seconds is not None:
            return self.seconds
        if self.started_at and self.finished_at:
            return max((self.finished_at - self.started_at).total_seconds(), 0.0)
        return None

    @property
    def tested(self) -> str:
        """What a test tests: "orders.amount", "orders" or ""."""
        if self.tested_model and self.tested_column:
            return f"{self.tested_model}.{self.tested_column}"
        return self.tested_model or self.tested_column
