"""Files a models run hands to Fast-Flow: its project's generated docs (one self-contained
HTML page) and its model graph. They arrive as `artifact` markers in pieces
(runs_app/in_run/models_runner.py), are put together in a `.partial` file beside the run's
spool on the worker, and are stored in the database (RunArtifact) once the last piece is
written, so a page never serves half a file and any web node serves it. Retention removes
them with the log.

Everything about a piece is checked here: only the known names, at most
ARTIFACT_MAX_BYTES per file, each piece within the size it announced. Pieces carry their
offset: written twice (a re-attached follower reads the log again), they leave the same
bytes.
"""

from __future__ import annotations

import base64
import binascii
import os

from django.db import DatabaseError

from runs_app.logs import LogWriter, spool_path
from runs_app.models import PipelineRun
from runs_app.models.chunk import RunArtifact, pack

ARTIFACT_NAMES = ("docs.html", "dag.json")
ARTIFACT_MAX_BYTES = 64 * 1024 * 1024
MAX_PIECE_BYTES = 64 * 1024


def artifact_content(run: PipelineRun, name: str) -> bytes | None:
    """A complete artifact of `run`, or None."""
    if name not in ARTIFACT_NAMES:
        return None
    found = RunArtifact.objects.filter(run=run, name=name).first()
    return found.content if found else None


def has_artifact(run: PipelineRun, name: str) -> bool:
    return RunArtifact.objects.filter(run=run, name=name).exists()


class ArtifactWriter:
    """Puts together the pieces of one run's artifacts and stores each complete file;
    tells the log once per file it refuses."""

    def __init__(self, run: PipelineRun, log: LogWriter) -> None:
        self.run = run
        self.folder = spool_path(run.public_id).with_suffix(".artifacts")
        self.log = log
        self.refused: set[str] = set()

    def write(self, piece: dict) -> None:
        name = str(piece.get("name", ""))[:100]
        problem, data, at, size = self._check(piece, name)
        if problem:
            self._refuse(name, problem)
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.folder / f"{name}.partial"
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        descriptor = os.open(partial, flags, 0o600)
        try:
            os.pwrite(descriptor, data, at)
            complete = at + len(data) == size
            if complete:
                os.ftruncate(descriptor, size)
                content = os.pread(descriptor, size, 0)
        finally:
            os.close(descriptor)
        if complete:
            try:
                RunArtifact.objects.update_or_create(
                    run=self.run, name=name, defaults={"size": size, "data": pack(content)}
                )
            except DatabaseError as exc:
                self._refuse(name, f"it could not be stored ({exc})")
            partial.unlink(missing_ok=True)
            if not any(self.folder.iterdir()):
                self.folder.rmdir()

    def _refuse(self, name: str, problem: str) -> None:
        if name not in self.refused:
            self.refused.add(name)
            self.log.system(f"artifact {name!r} ignored: {problem}")

    def _check(self, piece: dict, name: str) -> tuple[str, bytes, int, int]:
        if name not in ARTIFACT_NAMES:
            return "not an artifact Fast-Flow keeps", b"", 0, 0
        size, at = piece.get("size"), piece.get("at")
        if not isinstance(size, int) or not isinstance(at, int) or size < 0 or at < 0:
            return "its size or offset is not a number", b"", 0, 0
        if size > ARTIFACT_MAX_BYTES:
            return f"it is larger than {ARTIFACT_MAX_BYTES // 1024**2} MiB", b"", 0, 0
        try:
            data = base64.b64decode(str(piece.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            return "a piece is not base64", b"", 0, 0
        if len(data) > MAX_PIECE_BYTES or at + len(data) > size:
            return "a piece does not fit the size it announced", b"", 0, 0
        return "", data, at, size
