"""The environments warm-ups make: for one pipeline, environment and Python, the lock its
runs install exactly — and which one each run got."""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils import timezone

from pipelines_app.models import Pipeline


class EnvironmentLock(models.Model):
    """What a warm-up installed ("name==version", sorted): the lock every run of that
    environment installs, offline, never resolving again. Rows are never changed: a new
    warm-up that resolves differently (unpinned requirements, a forced warm-up) adds one,
    so a run's record keeps what it really ran with."""

    pipeline = models.ForeignKey(
        Pipeline, on_delete=models.CASCADE, related_name="environment_locks"
    )
    environment_key = models.CharField(
        max_length=64, help_text="Pipeline.environment_key: requirements, Python and image."
    )
    sha256 = models.CharField(max_length=64, help_text="Of the lock's text.")
    packages = models.JSONField(default=list, help_text='"name==version", sorted.')
    index_options = models.JSONField(
        default=list, blank=True, help_text="The indexes it names (runs read their cached pages)."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "environment_key", "sha256"], name="one_lock_per_content"
            )
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name} {self.short_hash} ({len(self.packages)} packages)"

    @property
    def text(self) -> str:
        return lock_text(self.index_options, self.packages)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @classmethod
    def record(
        cls, pipeline: Pipeline, environment_key: str, packages: list[str]
    ) -> EnvironmentLock:
        """The lock of what a warm-up just installed (the existing row when it is the same)."""
        packages = sorted(packages, key=str.lower)
        options = list(pipeline.index_options)
        digest = hashlib.sha256(lock_text(options, packages).encode()).hexdigest()
        lock, created = cls.objects.get_or_create(
            pipeline=pipeline,
            environment_key=environment_key,
            sha256=digest,
            defaults={"packages": packages, "index_options": options},
        )
        if not created:  # the newest again: runs from now on take it
            cls.objects.filter(pk=lock.pk).update(created_at=timezone.now())
        return lock

    @classmethod
    def current(cls, pipeline: Pipeline) -> EnvironmentLock | None:
        """The lock a run of `pipeline` installs now (None: not warmed for this environment)."""
        return cls.objects.filter(
            pipeline=pipeline, environment_key=pipeline.environment_key
        ).first()


class NodeWarmth(models.Model):
    """A worker node whose own uv cache holds a lock's packages: its runs of that lock
    install offline at once. A node without the record installs the lock first (its run's
    log says so) — every node has a cache of its own (docs/nodes.md)."""

    lock = models.ForeignKey(EnvironmentLock, on_delete=models.CASCADE, related_name="nodes")
    node = models.CharField(max_length=100, help_text="WORKER_NAME")
    warmed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["node"]
        constraints = [models.UniqueConstraint(fields=["lock", "node"], name="warm_once")]

    def __str__(self) -> str:
        return f"{self.lock} on {self.node}"

    @classmethod
    def record(cls, lock: EnvironmentLock, node: str) -> None:
        cls.objects.update_or_create(lock=lock, node=node, defaults={"warmed_at": timezone.now()})

    @classmethod
    def holds(cls, lock: EnvironmentLock, node: str) -> bool:
        return cls.objects.filter(lock=lock, node=node).exists()


def lock_text(index_options: list[str], packages: list[str]) -> str:
    """The lock as pip's requirements format: its indexes, then one pin per line."""
    return "".join(f"{line}\n" for line in [*index_options, *packages])
