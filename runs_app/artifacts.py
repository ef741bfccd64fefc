"""Files a models run hands to Fast-Flow: its project's generated docs (one self-contained
HTML page) and its model graph. They arrive as `artifact` markers in pieces
(runs_app/in_run/models_runner.py) and are kept next to the run's log, in
`<LOGS_DIR>/<run id>.artifacts/`, until retention removes the log.

Everything about a piece is checked here: only the known names, at most
ARTIFACT_MAX_BYTES per file, each piece within the size it announced. A file becomes
visible (renamed from its `.partial`) only once its last piece is written, so a page never
serves half a file. Pieces carry their offset: written twice (a re-attached follower reads
the log again), they leave the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
from pathlib import Path

from runs_app.logs import LogWriter

ARTIFACT_NAMES = ("docs.html", "dag.json")
ARTIFACT_MAX_BYTES = 64 * 1024 * 1024
MAX_PIECE_BYTES = 64 * 1024


def artifacts_dir(log_path: Path | str) -> Path:
    return Path(log_path).with_suffix(".artifacts")


def artifact_file(log_path: Path | str, name: str) -> Path | None:
    """A complete artifact of the run whose log is at `log_path`, or None."""
    if name not in ARTIFACT_NAMES or not log_path:
        return None
    path = artifacts_dir(log_path) / name
    return path if path.is_file() and not path.is_symlink() else None


def remove_artifacts(log_path: Path | str) -> None:
    shutil.rmtree(artifacts_dir(log_path), ignore_errors=True)


class ArtifactWriter:
    """Writes the pieces of one run's artifacts; tells the log once per file it refuses."""

    def __init__(self, log_path: Path | str, log: LogWriter) -> None:
        self.folder = artifacts_dir(log_path)
        self.log = log
        self.refused: set[str] = set()

    def write(self, piece: dict) -> None:
        name = str(piece.get("name", ""))[:100]
        problem, data, at, size = self._check(piece, name)
        if problem:
            if name not in self.refused:
                self.refused.add(name)
                self.log.system(f"artifact {name!r} ignored: {problem}")
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = self.folder / f"{name}.partial"
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        descriptor = os.open(partial, flags, 0o600)
        try:
            os.pwrite(descriptor, data, at)
            if at + len(data) == size:
                os.ftruncate(descriptor, size)
        finally:
            os.close(descriptor)
        if at + len(data) == size:
            partial.replace(self.folder / name)

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
