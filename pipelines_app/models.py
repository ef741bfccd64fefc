"""The pipeline catalogue: one row per discovered folder, its schedules, and a record of each
discovery."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from pipelines_app.contract import PipelineConfig, RunSettings, ScheduleSpec
from pipelines_app.cron import next_fire_times
from pipelines_app.environments import SOURCE_LABELS
from secrets_app.crypto import decrypt, encrypt
from secrets_app.fields import EncryptedTextField

# Environments are made from a lock since this format (runs_app/in_run/prepare.sh).
ENVIRONMENT_FORMAT = "lock-v1"


class WithoutData(models.Manager):
    """Bundles are read for their names and sizes everywhere; their data (up to
    BUNDLE_MAX_MB) only where a worker unpacks one, asked for by name."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().defer("data")


class CodeBundle(models.Model):
    """A pipeline folder's content, once per content: a deterministic tar archive
    (pipelines_app.bundles), zlib-compressed. Runs name the bundle they run, so any worker
    node can fetch their code from the database; rows nothing names are removed daily."""

    sha256 = models.CharField(max_length=64, unique=True, help_text="Of the tar archive.")
    size = models.PositiveBigIntegerField(help_text="The archive's bytes (uncompressed).")
    files = models.PositiveIntegerField()
    data = models.BinaryField(help_text="The tar archive, zlib-compressed.")
    created_at = models.DateTimeField(default=timezone.now)

    objects = WithoutData()

    class Meta:
        base_manager_name = "objects"  # a run's or a pipeline's bundle: without its data

    def __str__(self) -> str:
        return f"bundle {self.short_hash}"

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


class Pipeline(models.Model):
    """A pipeline folder as last discovered. Rows are never deleted by discovery:
    a folder that disappears becomes MISSING and keeps its run history."""

    class EntryType(models.TextChoices):
        SCRIPT = "script", "script (main.py)"
        NOTEBOOK = "notebook", "notebook (main.ipynb)"
        MODELS = "models", "models (a dbt or FastFlowTransform project)"

    class State(models.TextChoices):
        PRESENT = "present", "present"
        MISSING = "missing", "missing (folder gone)"

    class WarmStatus(models.TextChoices):
        PENDING = "pending", "waiting to warm"
        WARMING = "warming", "warming"
        READY = "ready", "ready (cached)"
        FAILED = "failed", "warm-up failed"

    name = models.CharField(max_length=100, unique=True, help_text="The folder's name.")
    folder_path = models.CharField(max_length=1024)
    # Its code as runs take it (pipelines_app.bundles), and what its folder looked like then
    # (names, sizes, times: a changed folder is bundled again).
    bundle = models.ForeignKey(
        CodeBundle, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    bundle_fingerprint = models.CharField(max_length=64, blank=True)
    bundle_commit = models.CharField(
        max_length=40, blank=True, help_text="The git commit its bundle was made at."
    )
    bundle_node = models.CharField(
        max_length=100, blank=True, help_text="The node that discovered it (WORKER_NAME)."
    )
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
    # "--extra-index-url URL" lines its requirements name (runs install from the same).
    index_options = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PRESENT)
    # Dependency warm-up (runs_app.warmup): the requirements installed once into the shared
    # uv cache, which runs read but never write. warmed_hash is the environment_key warmed.
    warm_status = models.CharField(max_length=8, choices=WarmStatus.choices, blank=True)
    warmed_hash = models.CharField(max_length=64, blank=True, help_text="requirements warmed")
    warm_duration = models.DurationField(null=True, blank=True)
    warm_error = models.TextField(blank=True)
    warmed_at = models.DateTimeField(null=True, blank=True)
    # What the last warm-up installed ("name==version"), for the dependency audit.
    resolved_requirements = models.JSONField(default=list, blank=True)
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
    def needs_environment(self) -> bool:
        """Whether runs build an environment (requirements, or a chosen Python)."""
        return self.has_requirements or bool(self.spec.python_version)

    @property
    def worker_image(self) -> str:
        """The image its runs start from: PYTHON_IMAGES' image for the minor version its
        python_version names ("3.13", "3.13.1", "==3.13.*"), else WORKER_IMAGE."""
        if self.spec.python_version:
            minor = re.search(r"\d+\.\d+", self.spec.python_version)
            if minor and minor.group(0) in settings.PYTHON_IMAGES:
                return settings.PYTHON_IMAGES[minor.group(0)]
        return settings.WORKER_IMAGE

    @property
    def environment_source(self) -> str:
        """Where its environment comes from, in words (pipelines_app.environments)."""
        return SOURCE_LABELS.get(self.requirements_file, self.requirements_file)

    @property
    def executor(self) -> tuple[str, str]:
        """The executor its runs take (pipeline.json "executor", else the instance's), and
        why they cannot start ("" when they can)."""
        chosen = self.spec.executor
        if not chosen or chosen == settings.FASTFLOW_EXECUTOR:
            return settings.FASTFLOW_EXECUTOR, ""
        if chosen in settings.PIPELINE_EXECUTORS:
            return chosen, ""
        allowed = ", ".join(settings.PIPELINE_EXECUTORS) or "none"
        return chosen, (
            f"its pipeline.json asks for the {chosen} executor, which this instance does not "
            f"let pipelines choose (PIPELINE_EXECUTORS: {allowed}; runs here take "
            f"{settings.FASTFLOW_EXECUTOR})"
        )

    @property
    def executor_wanted(self) -> str:
        """The executor a worker must be able to start for its runs: its pipeline.json's
        allowed choice; "" when any worker will do (its own executor, or a refused choice
        any worker fails the run for)."""
        name, refused = self.executor
        return "" if refused or not self.spec.executor else name

    @property
    def data_folder(self) -> Path | None:
        """pipeline.json data_folder: DATA_DIR/pipeline-data/<name>, kept between runs."""
        if not self.spec.data_folder:
            return None
        return Path(settings.DATA_DIR) / "pipeline-data" / self.name

    @property
    def environment_key(self) -> str:
        """What a warm-up made ready: the requirements, the Python asked for, the image (and
        how environments are made: a new ENVIRONMENT_FORMAT warms every pipeline again)."""
        material = "\0".join(
            [
                ENVIRONMENT_FORMAT,
                self.requirements_hash,
                self.spec.python_version or "",
                self.worker_image,
            ]
        )
        return hashlib.sha256(material.encode()).hexdigest()

    @property
    def error_messages(self) -> list[str]:
        return [problem["message"] for problem in self.config_errors]

    @property
    def warning_messages(self) -> list[str]:
        return [problem["message"] for problem in self.config_warnings]

    @classmethod
    def fernet_tokens_in_files(cls) -> Iterator[tuple[str, str, str]]:
        """(where, name, token) of every encrypted_env token in pipeline.json files, for key
        rotation (secrets_app.rotation): they live in git, so they are listed, not changed."""
        for pipeline in cls.objects.filter(state=cls.State.PRESENT):
            spec = pipeline.spec
            sources = [(pipeline.name, spec.run.encrypted_env)]
            sources += [
                (f"{pipeline.name} schedule {schedule.id}", schedule.overrides.encrypted_env)
                for schedule in spec.schedules
            ]
            for where, tokens in sources:
                for name, token in tokens.items():
                    yield where, name, token


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


class Schedule(models.Model):
    """When a pipeline starts by itself: a cron expression, an interval or one moment.

    Schedules from pipeline.json (origin "file") are kept in step by every discovery and are
    read-only elsewhere; schedules made in the UI or admin are editable. `config_id` is the
    `schedules[].id` of pipeline.json ("default" for the top-level fields, "run_once" for
    `run_once_at`), which `run_config_id` and webhook keys refer to.

    `next_fire_at` is the one due time the scheduler claims, with a conditional UPDATE, so a
    due time fires exactly once however many workers run (pipelines_app.scheduler).
    """

    class Origin(models.TextChoices):
        FILE = "file", "pipeline.json"
        UI = "ui", "web UI"

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="schedules")
    config_id = models.CharField("id", max_length=100)
    origin = models.CharField(max_length=4, choices=Origin.choices, default=Origin.UI)
    cron = models.CharField(max_length=100, blank=True, help_text="5 fields, e.g. 30 2 * * 1-5")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    run_once_at = models.DateTimeField(null=True, blank=True)
    timezone = models.CharField(
        max_length=64, blank=True, help_text="For cron; empty: the pipeline's or the instance's."
    )
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    # RunSettings.to_json(): the limits, retries, env and webhook key this schedule overrides.
    overrides = models.JSONField(default=dict, blank=True)
    anchor_at = models.DateTimeField(help_text="Interval schedules fire at anchor + n * interval.")
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True, help_text="The last due time run.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pipeline__name", "config_id"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "config_id"], name="schedule_id_unique")
        ]
        indexes = [models.Index(fields=["next_fire_at"], name="schedule_next_fire")]

    def __str__(self) -> str:
        return f"{self.pipeline.name}/{self.config_id}"

    def save(self, *args, **kwargs) -> None:
        if self.anchor_at is None:
            self.anchor_at = self.start_at or timezone.now()
        super().save(*args, **kwargs)

    TIMING_FIELDS = ("cron", "interval_seconds", "run_once_at", "timezone", "start_at", "end_at")

    @classmethod
    def values_from_spec(cls, spec: ScheduleSpec) -> dict:
        return {
            "cron": spec.cron or "",
            "interval_seconds": spec.interval_seconds,
            "run_once_at": spec.run_once_at,
            "timezone": spec.timezone or "",
            "start_at": spec.start,
            "end_at": spec.end,
            "enabled": spec.enabled,
            "overrides": spec.overrides.to_json(),
        }

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or self.pipeline.spec.timezone or settings.TIME_ZONE)

    @property
    def settings(self) -> RunSettings:
        return RunSettings.from_json(self.overrides)

    @property
    def fires_by_time(self) -> bool:
        return bool(self.cron or self.interval_seconds or self.run_once_at)

    @property
    def is_active(self) -> bool:
        """Fires now: enabled, and its pipeline present, valid and enabled (else paused)."""
        pipeline = self.pipeline
        return self.enabled and pipeline.is_runnable and pipeline.enabled

    def describe(self) -> str:
        if self.cron:
            return f"cron {self.cron} ({self.tz.key})"
        if self.interval_seconds:
            return f"every {self.interval_seconds} s"
        if self.run_once_at:
            return f"once at {self.run_once_at.isoformat()}"
        return "no timing (webhook or chaining only)"

    def fire_times(self, after: datetime, count: int = 1) -> list[datetime]:
        """The next `count` due times strictly after `after`, inside the start/end window."""
        if self.start_at and after < self.start_at:
            after = self.start_at - timedelta(microseconds=1)
        times: list[datetime] = []
        if self.cron:
            times = next_fire_times(self.cron, after, self.tz, count)
        elif self.interval_seconds:
            step = timedelta(seconds=self.interval_seconds)
            if after < self.anchor_at:
                first = self.anchor_at
            else:
                first = self.anchor_at + ((after - self.anchor_at) // step + 1) * step
            times = [first + n * step for n in range(count)]
        elif self.run_once_at and self.run_once_at > after:
            times = [self.run_once_at]
        return [moment for moment in times if self.end_at is None or moment <= self.end_at]

    def next_fire_times(self, count: int = 5) -> list[datetime]:
        return self.fire_times(timezone.now(), count) if self.fires_by_time else []

    def plan(self, now: datetime | None = None) -> None:
        """After a change to its timing (or enabling it): a new interval grid, anchored at
        the start or now, and the next due time from now on. Not saved."""
        now = now or timezone.now()
        self.anchor_at = self.start_at or now
        upcoming = self.fire_times(now) if self.enabled else []
        self.next_fire_at = upcoming[0] if upcoming else None


class WebhookKey(models.Model):
    """A key made in the UI that lets an HTTP call start a pipeline; only its hash is kept.

    Keys are 256 random bits, so a plain SHA-256 is enough: there is nothing to guess.
    """

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="webhook_keys")
    label = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(
        max_length=8, help_text="The key's first characters, to tell keys apart."
    )
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pipeline__name", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "prefix"], name="webhook_key_prefix_unique")
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name} key {self.prefix}…"

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def make(cls, pipeline: Pipeline, label: str = "", user=None) -> tuple[WebhookKey, str]:
        """A new key; the plain key is returned once and never stored."""
        key = secrets.token_urlsafe(32)
        webhook_key = cls.objects.create(
            pipeline=pipeline,
            label=label,
            prefix=key[:8],
            key_hash=cls.hash(key),
            created_by=user if user is not None and user.is_authenticated else None,
        )
        return webhook_key, key


class GitSource(models.Model):
    """The pipeline repository (one per instance). Environment values are the defaults until
    an admin saves this row; credentials are stored Fernet-encrypted and only ever handed
    to git per command (pipelines_app.gitsync)."""

    class Auth(models.TextChoices):
        NONE = "none", "none (public, or a file path)"
        TOKEN = "token", "HTTPS token"
        SSH = "ssh", "SSH deploy key"
        GITHUB_APP = "github_app", "GitHub App"

    url = models.CharField("repository URL", max_length=500, blank=True)
    branch = models.CharField(max_length=200, default="main")
    subdir = models.CharField(
        "pipelines sub-folder", max_length=300, blank=True, help_text="Empty: the repository root."
    )
    auth = models.CharField(max_length=12, choices=Auth.choices, default=Auth.NONE)
    token_encrypted = EncryptedTextField()
    ssh_private_key_encrypted = EncryptedTextField()
    ssh_public_key = models.TextField(blank=True, editable=False)
    ssh_known_hosts = models.TextField(
        blank=True, help_text="Pinned on the first SSH sync; empty it to accept a new host key."
    )
    webhook_secret_encrypted = EncryptedTextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "git repository"
        verbose_name_plural = "git repository"

    def __str__(self) -> str:
        return f"{self.url or '(no repository)'} @ {self.branch}"

    def save(self, *args, **kwargs) -> None:
        self.pk = 1  # one repository per instance: always the same row
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> GitSource:
        """The saved configuration, or one made from the environment (GIT_REPO_URL …)."""
        source = cls.objects.filter(pk=1).first()
        if source is not None:
            return source
        return cls(
            pk=1,
            url=settings.GIT_REPO_URL,
            branch=settings.GIT_BRANCH,
            subdir=settings.PIPELINES_SUBDIR,
            webhook_secret_encrypted=_encrypted(settings.GIT_WEBHOOK_SECRET),
        )

    @property
    def is_configured(self) -> bool:
        return bool(self.url)

    def set_secret(self, field: str, value: str) -> None:
        setattr(self, f"{field}_encrypted", _encrypted(value))

    def secret(self, field: str) -> str:
        token = getattr(self, f"{field}_encrypted")
        return decrypt(token, f"the repository's {field.replace('_', ' ')}") if token else ""


def _encrypted(value: str) -> str:
    return encrypt(value) if value else ""


class Sync(models.Model):
    """One sync of the repository: what it deployed, or why it failed."""

    class Status(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "Sync now"
        CLI = "cli", "manage.py sync"
        INTERVAL = "interval", "AUTO_SYNC_INTERVAL"
        PUSH = "push", "push webhook"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    url = models.CharField(max_length=500, blank=True)
    branch = models.CharField(max_length=200, blank=True)
    commit = models.CharField(max_length=40, blank=True)
    previous_commit = models.CharField(max_length=40, blank=True)
    author = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True, help_text="The commit message.")
    summary = models.CharField(max_length=300, blank=True, help_text="What discovery changed.")
    error = models.TextField(blank=True, help_text="Why it failed, in full (credentials removed).")

    class Meta:
        ordering = ["-started_at", "-id"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"sync {self.started_at:%Y-%m-%d %H:%M:%S} {self.status}"

    @property
    def duration(self) -> timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None
