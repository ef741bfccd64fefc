"""One archive holds an instance: its database (SQLite's online backup, or `pg_dump`) —
run logs, samples and artifacts included, since they live there — and a summary of its
settings without any key. Encrypted values stay as they are in the database: they open only
with the same ENCRYPTION_KEY, whose fingerprint the summary records so a restore can say
when the key differs.

    backup-YYYYmmdd-HHMMSS.tar.gz
    ├── manifest.json          format, when, the database vendor, counts, settings summary
    └── database.sqlite3       (SQLite)  or  database.pgdump (PostgreSQL, custom format)

Archives of releases that kept logs in files also hold `logs/…`: a restore puts them back in
LOGS_DIR, and the migration that moved logs into the database stores them there.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from pipelines_app.bundles import safe_extract

FORMAT = 1
SQLITE_NAME, PG_NAME = "database.sqlite3", "database.pgdump"
# Settings worth knowing when restoring (none of them a secret).
SUMMARY_SETTINGS = [
    "BASE_URL", "TIME_ZONE", "DATA_DIR", "LOGS_DIR", "PIPELINES_DIR", "PIPELINES_SUBDIR",
    "FASTFLOW_EXECUTOR", "WORKER_IMAGE", "MAX_CONCURRENT_RUNS", "MAX_DAEMON_RUNS",
    "GIT_REPO_URL", "GIT_BRANCH", "LOG_RETENTION_DAYS", "LOG_RETENTION_RUNS",
    "RUN_RETENTION_DAYS", "PASSWORD_LOGIN", "INITIAL_ADMIN_EMAIL",
]  # fmt: skip


class BackupError(RuntimeError):
    """What went wrong, for the person running the command."""


def key_fingerprint() -> str:
    """Which ENCRYPTION_KEY encrypted the values (a hash of it: the key itself never leaves)."""
    return hashlib.sha256(settings.ENCRYPTION_KEYS[0].encode()).hexdigest()[:16]


def _counts() -> dict[str, int]:
    names = ["pipelines_app.Pipeline", "runs_app.PipelineRun", "secrets_app.Variable",
             "auth.User", "fastflow_site.AuditEntry"]  # fmt: skip
    return {name: apps.get_model(name).objects.count() for name in names}


def manifest() -> dict:
    latest = {}
    for app, name in MigrationRecorder(connection).applied_migrations():
        latest[app] = max(latest.get(app, ""), name)
    return {
        "format": FORMAT,
        "created_at": timezone.now().isoformat(),
        "database": connection.vendor,
        "migrations": latest,
        "counts": _counts(),
        "encryption_key_fingerprint": key_fingerprint(),
        "settings": {name: str(getattr(settings, name, "")) for name in SUMMARY_SETTINGS},
    }


def _pg_environment() -> tuple[list[str], dict[str, str]]:
    """pg_dump/pg_restore connection options for the default database (password by env)."""
    db = connection.settings_dict
    options = ["--dbname", db["NAME"]]
    if db.get("HOST"):
        options += ["--host", db["HOST"]]
    if db.get("PORT"):
        options += ["--port", str(db["PORT"])]
    if db.get("USER"):
        options += ["--username", db["USER"]]
    env = {**os.environ, "PGPASSWORD": db.get("PASSWORD") or ""}
    return options, env


def _run(command: list[str], env: dict[str, str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(
            f"{command[0]} is not installed (Debian: apt-get install postgresql-client)"
        )
    done = subprocess.run(  # noqa: S603 (pg_dump/pg_restore with our own arguments)
        command, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip() or done.stdout.strip()}")


def dump_database(folder: Path) -> Path:
    if connection.vendor == "sqlite":
        target = folder / SQLITE_NAME
        connection.ensure_connection()
        with sqlite3.connect(target) as copy:
            connection.connection.backup(copy)  # consistent while others write (online)
        return target
    if connection.vendor == "postgresql":
        target = folder / PG_NAME
        options, env = _pg_environment()
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", *options,
              "--file", str(target)], env)  # fmt: skip
        return target
    raise BackupError(f"backups of {connection.vendor} databases are not supported")


def backup(target: Path) -> dict:
    """Write the archive to `target` (a .tar.gz); its manifest is returned."""
    summary = manifest()
    with tempfile.TemporaryDirectory() as scratch:
        database = dump_database(Path(scratch))
        partial = target.with_name(target.name + ".partial")
        with tarfile.open(partial, "w:gz") as archive:
            data = json.dumps(summary, indent=2).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size, info.mtime = len(data), int(timezone.now().timestamp())
            archive.addfile(info, fileobj=io.BytesIO(data))
            archive.add(database, database.name)
        partial.replace(target)  # never a half-written archive under the real name
    target.chmod(0o600)  # it holds every encrypted value and the audit log
    return summary


def read_manifest(archive_path: Path) -> dict:
    not_ours = BackupError(f"{archive_path} is not a Fast-Flow backup (no manifest.json)")
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            member = archive.extractfile("manifest.json")
            if member is None:
                raise not_ours
            found = json.load(member)
    except (KeyError, tarfile.TarError, OSError, ValueError):
        raise not_ours from None
    if found.get("format") != FORMAT:
        raise BackupError(f"{archive_path} has backup format {found.get('format')}; this "
                          f"Fast-Flow reads format {FORMAT}")  # fmt: skip
    return found


def is_empty_instance() -> bool:
    """No tables yet, or tables without pipelines, runs or people."""
    tables = connection.introspection.table_names()
    if "runs_app_pipelinerun" not in tables:
        return True
    return not any(_counts()[name] for name in
                   ("pipelines_app.Pipeline", "runs_app.PipelineRun", "auth.User"))  # fmt: skip


def restore(archive_path: Path) -> tuple[dict, list[str]]:
    """Bring an empty instance back from `archive_path`; (its manifest, warnings)."""
    found = read_manifest(archive_path)
    if found["database"] != connection.vendor:
        raise BackupError(
            f"the backup holds a {found['database']} database and this instance uses "
            f"{connection.vendor}: restore it into an instance of the same kind"
        )
    if not is_empty_instance():
        raise BackupError(
            "this instance is not empty (it has pipelines, runs or people): restore into a "
            "fresh DATA_DIR / an empty database"
        )
    logs = Path(settings.LOGS_DIR)
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(archive_path, "r:gz") as archive:
        safe_extract(archive, Path(scratch))  # no links out, no absolute paths
        _restore_database(Path(scratch))
        restored_logs = Path(scratch) / "logs"  # (an archive of an older release)
        if restored_logs.is_dir():
            for path in restored_logs.iterdir():
                target = logs / path.name
                if not target.exists():
                    shutil.copy2(path, target)
    call_command("migrate", verbosity=0)  # the backup may come from an older release
    warnings = []
    if found["encryption_key_fingerprint"] != key_fingerprint():
        warnings.append(
            "ENCRYPTION_KEY differs from the one the backup was made with: stored secrets "
            "will not decrypt until that key is set (first, or listed after the new one)"
        )
    return found, warnings


def _restore_database(folder: Path) -> None:
    if connection.vendor == "sqlite":
        source = folder / SQLITE_NAME
        target = Path(connection.settings_dict["NAME"])
        for alias in connections:
            connections[alias].close()
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        with sqlite3.connect(source) as original, sqlite3.connect(target) as copy:
            original.backup(copy)
        return
    options, env = _pg_environment()
    connection.close()
    # The schema made by a first migrate (if any) is replaced by the backup's.
    _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
          "--exit-on-error", *options, str(folder / PG_NAME)], env)  # fmt: skip
