"""Is this instance ready to do its work? Each check answers ok or not, with a detail for
operators (never shown to anonymous callers): the database, a live worker, the Docker
engine (as the workers see it: the web process has no engine access), free disk, the
last repository sync."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection

from pipelines_app.models import GitSource, Sync
from runs_app.models import WorkerProcess


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as problem:
        return Check("database", False, f"the database does not answer: {problem}")
    return Check("database", True, connection.vendor)


def worker() -> Check:
    """Fails without a live worker, and while a live worker is degraded (a loop failing, a
    thread started again: its schedules, runs or tasks may be held up), saying which."""
    alive = list(WorkerProcess.alive().values_list("name", "degraded"))
    degraded = [f"{name} is degraded: {why}" for name, why in alive if why]
    if degraded:
        return Check("worker", False, "; ".join(degraded))
    if alive:
        return Check("worker", True, f"{len(alive)} worker(s) reported in the last "
                     f"{settings.RUN_HEARTBEAT_TIMEOUT} s")  # fmt: skip
    return Check(
        "worker",
        False,
        f"no worker has reported in the last {settings.RUN_HEARTBEAT_TIMEOUT} s: runs wait "
        "(start `manage.py worker`)",
    )


def engine() -> Check:
    if settings.FASTFLOW_EXECUTOR == "local":
        return Check("engine", True, f"executor {settings.FASTFLOW_EXECUTOR}: no engine needed")
    workers = list(WorkerProcess.alive().values_list("engine_ok", "engine_error"))
    if any(ok for ok, _ in workers):
        return Check("engine", True, "a worker reaches the Docker engine")
    if not workers:
        return Check("engine", False, "unknown: no live worker to ask")
    return Check("engine", False, f"no worker reaches the Docker engine: {workers[0][1]}")


def disk() -> Check:
    lowest = None
    for folder in {Path(settings.DATA_DIR), Path(settings.LOGS_DIR)}:
        try:
            free = shutil.disk_usage(folder).free
        except OSError as problem:
            return Check("disk", False, f"{folder} cannot be read: {problem.strerror}")
        if lowest is None or free < lowest[1]:
            lowest = (folder, free)
    folder, free = lowest
    needed = settings.HEALTH_MIN_FREE_DISK_MB * 1024 * 1024
    detail = f"{free // (1024 * 1024)} MiB free under {folder}"
    if free < needed:
        detail += f" (fewer than HEALTH_MIN_FREE_DISK_MB={settings.HEALTH_MIN_FREE_DISK_MB})"
    return Check("disk", free >= needed, detail)


def last_sync() -> Check:
    if not GitSource.load().is_configured:
        return Check("sync", True, "no repository configured")
    latest = Sync.objects.exclude(status=Sync.Status.RUNNING).first()
    if latest is None:
        return Check("sync", True, "not synced yet")
    if latest.status == Sync.Status.FAILED:
        return Check("sync", False, f"the last sync failed: {latest.error.splitlines()[0]}"
                     if latest.error else "the last sync failed")  # fmt: skip
    return Check("sync", True, f"{latest.commit[:12]} synced {latest.finished_at:%Y-%m-%d %H:%M}")


def readiness() -> list[Check]:
    checks = [database()]
    if not checks[0].ok:
        return checks  # nothing else can be read
    return [*checks, worker(), engine(), disk(), last_sync()]
