"""The pipeline catalogue: one row per discovered folder, plus a record of each discovery."""

from __future__ import annotations

from functools import cached_property

from django.db import models
from django.urls import reverse

from pipelines_app.contract import PipelineConfig


class Pipeline(models.Model):
    """A pipeline folder as last discovered. Rows are never deleted by discovery:
    a folder that disappears becomes MISSING and keeps its run history."""

    class EntryType(models.TextChoices):
        SCRIPT = "script", "script (main.py)"
        NOTEBOOK = "notebook", "notebook (main.ipynb)"

    class State(models.TextChoices):
        PRESENT = "present", "present"
        MISSING = "missing", "missing (folder gone)"

    name = models.CharField(max_length=100, unique=True, help_text="The folder's name.")
    folder_path = models.CharField(max_length=1024)
    config_file = models.CharField(
        max_length=120, blank=True, help_text="pipeline.json or <name>.json; empty when none."
    )
    description = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    entry_type = models.CharField(
        max_length=10, choices=EntryType.choices, default=EntryType.SCRIPT
    )
    # PipelineConfig.to_json(): validated and normalised; read it through `.spec`.
    config = models.JSONField(default=dict, blank=True)
    config_errors = models.JSONField(default=list, blank=True)
    config_warnings = models.JSONField(default=list, blank=True)
    has_requirements = models.BooleanField(default=False)
    requirements_file = models.CharField(
        max_length=40, blank=True, help_text="requirements.txt.lock wins over requirements.txt."
    )
    requirements_hash = models.CharField(max_length=64, blank=True, help_text="sha256")
    requirements_text = models.TextField(blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PRESENT)
    discovered_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    missing_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["state", "name"], name="pipeline_state_name")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("pipelines_app:detail", args=[self.name])

    @cached_property
    def spec(self) -> PipelineConfig:
        """The typed configuration (no JSON re-parsing, no re-validation)."""
        return PipelineConfig.from_json(self.config)

    @property
    def is_valid(self) -> bool:
        return not self.config_errors

    @property
    def is_runnable(self) -> bool:
        """Whether a run can be started at all (a disabled pipeline can, after confirmation)."""
        return self.state == self.State.PRESENT and self.is_valid

    @property
    def status(self) -> str:
        """One word for lists: missing, invalid, disabled or ok."""
        if self.state == self.State.MISSING:
            return "missing"
        if not self.is_valid:
            return "invalid"
        return "ok" if self.enabled else "disabled"

    @property
    def error_messages(self) -> list[str]:
        return [problem["message"] for problem in self.config_errors]

    @property
    def warning_messages(self) -> list[str]:
        return [problem["message"] for problem in self.config_warnings]


class DiscoveryScan(models.Model):
    """One pass of discovery over the pipelines directory: what it found and what it skipped.

    Folders that are not pipelines (no entry point, bad name, symlink out of the tree) have no
    Pipeline row; they are listed here so a person can see why they are not in the catalogue.
    """

    started_at = models.DateTimeField()
    duration = models.DurationField()
    root = models.CharField(max_length=1024)
    root_error = models.TextField(blank=True)
    # [{"name": ..., "status": "ignored" | "rejected", "reason": ...}]
    skipped_folders = models.JSONField(default=list, blank=True)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0, help_text="rows that changed")
    missing_count = models.PositiveIntegerField(default=0)
    invalid_count = models.PositiveIntegerField(default=0)

    KEEP = 100  # older scans are pruned

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"discovery of {self.root} at {self.started_at:%Y-%m-%d %H:%M:%S}"
