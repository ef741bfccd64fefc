"""A run's code on this worker node: its bundle (pipelines_app.bundles), fetched from the
database the first time it is needed and unpacked, read-only, into DATA_DIR/bundles/<sha256>.
Nothing of the code comes from a shared folder, so any node runs any pipeline, and a
worker that re-attaches to a run elsewhere finds the same code.

The cache is bounded (BUNDLE_CACHE_MB): after an unpack the least recently used bundles go,
never one that a run of this node is running.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import tarfile
import threading
import time
import uuid
import zlib
from pathlib import Path

from django.conf import settings

from pipelines_app.bundles import safe_extract
from pipelines_app.models import CodeBundle
from runs_app.models import PipelineRun

logger = logging.getLogger(__name__)

COMPLETE = ".complete"  # written last: a folder without it is half unpacked
_unpacking = threading.Lock()


def cache_root() -> Path:
    return Path(settings.DATA_DIR) / "bundles"


def code_folder(bundle_id: int) -> Path:
    """The unpacked code of bundle `bundle_id` on this node (fetched now if missing)."""
    sha = CodeBundle.objects.values_list("sha256", flat=True).get(pk=bundle_id)
    home = cache_root() / sha
    code = home / "code"
    if (home / COMPLETE).exists():
        os.utime(home / COMPLETE)  # recently used
        return code
    with _unpacking:  # one unpack of a bundle at a time in this process
        if not (home / COMPLETE).exists():
            _unpack(bundle_id, home)
    _evict()
    return code


def _unpack(bundle_id: int, home: Path) -> None:
    data = CodeBundle.objects.values_list("data", flat=True).get(pk=bundle_id)
    scratch = cache_root() / f".unpacking-{uuid.uuid4().hex}"
    scratch.mkdir(parents=True, mode=0o755)
    try:
        with tarfile.open(fileobj=io.BytesIO(zlib.decompress(bytes(data)))) as tar:
            safe_extract(tar, scratch / "code")  # no links out, no devices
        _read_only(scratch / "code")
        (scratch / COMPLETE).touch()
        if home.exists() and not (home / COMPLETE).exists():
            _remove(home)  # a half unpack of a worker that died
        try:
            scratch.rename(home)
        except OSError:
            if not (home / COMPLETE).exists():
                raise
            _remove(scratch)  # another worker of this node unpacked it meanwhile
    except BaseException:
        _remove(scratch)
        raise


def _read_only(folder: Path) -> None:
    """Runs read their code and never change it (it is the bundle of later runs too)."""
    for directory, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(0o555 if os.access(path, os.X_OK) else 0o444)
        Path(directory).chmod(0o555)


def _remove(folder: Path) -> None:
    for directory, _dirnames, _filenames in os.walk(folder):
        os.chmod(directory, 0o700)  # (its entries can go)
    shutil.rmtree(folder, ignore_errors=True)


def _size(folder: Path) -> int:
    return sum(
        (Path(directory) / name).lstat().st_size
        for directory, _dirs, names in os.walk(folder)
        for name in names
    )


def _evict() -> None:
    """Least recently used bundles go while the cache is over BUNDLE_CACHE_MB; never one a
    run of this node runs now."""
    budget = settings.BUNDLE_CACHE_MB * 1024**2
    homes = [home for home in cache_root().iterdir() if (home / COMPLETE).exists()]
    sizes = {home: _size(home) for home in homes}
    total = sum(sizes.values())
    if total <= budget:
        return
    host = socket.gethostname()
    in_use = set(
        PipelineRun.objects.filter(status__in=PipelineRun.IN_FLIGHT_STATUSES, bundle__isnull=False)
        .filter(worker_id__startswith=f"{host}:")
        .values_list("bundle__sha256", flat=True)
    )
    by_age = sorted(homes, key=lambda home: (home / COMPLETE).stat().st_mtime)
    for home in by_age:
        if total <= budget:
            break
        if home.name in in_use or time.time() - (home / COMPLETE).stat().st_mtime < 60:
            continue  # running, or just unpacked for a run about to start
        _remove(home)
        total -= sizes[home]
        logger.info("bundle %s left the cache (BUNDLE_CACHE_MB)", home.name[:12])
