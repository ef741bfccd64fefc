"""What a page shows of a run lives in the database, so any web node can serve it and no
worker's disk is needed once the run has ended (docs/architecture.md, "nodes").

A run's log and its CPU/memory samples are stored as insert-only chunks: each holds a
contiguous range of sequence numbers, compressed. A growing log is never one row updated
again and again (dead tuples pile up on PostgreSQL); it is more rows. Artifacts (a models
run's docs and graph) are one row per file, written once complete.
"""

from __future__ import annotations

import zlib

from django.db import models
from django.utils import timezone


def pack(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def unpack(data: bytes | memoryview) -> bytes:
    return zlib.decompress(bytes(data))


class LogChunk(models.Model):
    class Kind(models.TextChoices):
        LINES = "lines", "log lines"
        SAMPLES = "samples", "CPU/memory samples"

    run = models.ForeignKey("runs_app.PipelineRun", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.LINES)
    first_seq = models.PositiveBigIntegerField()
    last_seq = models.PositiveBigIntegerField()
    # Uncompressed bytes: a log's cap (LOG_MAX_SIZE_MB) counts what the run printed.
    size = models.PositiveIntegerField()
    data = models.BinaryField(help_text="zlib: lines as `timestamp stream text\\n`, or JSON")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # A spool shipped twice (a crash between the insert and emptying the spool)
            # cannot store a range twice.
            models.UniqueConstraint(fields=["run", "kind", "first_seq"], name="chunk_once"),
        ]
        indexes = [models.Index(fields=["run", "kind", "last_seq"], name="chunk_after")]

    def __str__(self) -> str:
        return f"{self.kind} {self.first_seq}-{self.last_seq} of run {self.run_id}"

    @property
    def count(self) -> int:
        return self.last_seq - self.first_seq + 1


class LogText(models.Model):
    """The text of a stored chunk of log lines, for searching across runs
    (runs_app.log_search): the chunk's lines without their timestamps and streams, one per
    line, uncompressed because the databases' text indexes read it — a trigram index on
    PostgreSQL (pg_trgm), an FTS5 table with the trigram tokenizer on SQLite (both made by
    migration 0023, which also keeps the SQLite one in step with this table by triggers)."""

    run = models.ForeignKey("runs_app.PipelineRun", on_delete=models.CASCADE, related_name="+")
    first_seq = models.PositiveBigIntegerField()
    text = models.TextField()

    def __str__(self) -> str:
        return f"text of lines from {self.first_seq} of run {self.run_id}"


class RunArtifact(models.Model):
    """A file a models run handed over (runs_app.artifacts), stored when complete."""

    run = models.ForeignKey(
        "runs_app.PipelineRun", on_delete=models.CASCADE, related_name="artifacts"
    )
    name = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    data = models.BinaryField(help_text="zlib")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="artifact_once")]

    def __str__(self) -> str:
        return f"{self.name} of run {self.run_id}"

    @property
    def content(self) -> bytes:
        return unpack(self.data)
