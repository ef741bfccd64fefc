"""Storage in use, measured hourly for the dashboard: the database, the logs and artifacts
kept in it (once for the instance, by whichever worker claims the turn), and each node's
own uv cache and log spool (by a worker of that node). Walking a large cache takes seconds,
so this is chore work, never a page's."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.db.models.functions import Length

from runs_app.models import Chore, LogChunk, RunArtifact
from runs_app.models.chore import STORAGE as CHORE
from runs_app.models.chore import STORAGE_NODE_PREFIX as NODE_PREFIX

logger = logging.getLogger(__name__)
EVERY = timedelta(minutes=55)  # the chores loop looks hourly


def measure_instance() -> None:
    """A task: the database's size and what its logs and artifacts take."""
    if not Chore.claim(CHORE, every=EVERY):
        return
    try:
        report = {
            "database": database_size(),
            "logs": LogChunk.objects.aggregate(n=Sum(Length("data")))["n"] or 0,
            "artifacts": RunArtifact.objects.aggregate(n=Sum(Length("data")))["n"] or 0,
        }
    except Exception as problem:  # a chore never takes its worker down; it says why
        logger.warning("could not measure storage: %s", problem)
        Chore.done(CHORE, {}, error=str(problem))
        return
    Chore.done(CHORE, report)


def measure_node() -> None:
    """This node's uv cache (docker and local executors keep it here) and log spool."""
    name = (NODE_PREFIX + settings.WORKER_NAME)[:50]  # Chore.name's length
    if not Chore.claim(name, every=EVERY):
        return
    report = {"spool": folder_size(Path(settings.LOGS_DIR))}
    if settings.FASTFLOW_EXECUTOR != "swarm":  # a Swarm's caches are volumes of its nodes
        report["uv_cache"] = folder_size(Path(settings.UV_CACHE_DIR))
    Chore.done(name, report)


def database_size() -> int:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_database_size(current_database())")
            return int(cursor.fetchone()[0])
        cursor.execute("PRAGMA page_count")
        pages = cursor.fetchone()[0]
        cursor.execute("PRAGMA page_size")
        return int(pages * cursor.fetchone()[0])


def folder_size(root: Path) -> int:
    """Bytes on disk under root, each file once however many hard links it has (the uv
    cache links its files into environments), symlinks not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(root, onerror=lambda _: None):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue  # removed while walking
            key = (info.st_dev, info.st_ino)
            if key not in seen:
                seen.add(key)
                total += info.st_blocks * 512
    return total
