"""A pipeline's code as it travels to worker nodes: the folder's content as one deterministic
tar archive (sorted entries, no times, owners or modes beyond "executable"), named by its
sha256 and stored once per content in the database (CodeBundle). Each run names the bundle
it runs; a worker that lacks it fetches it from the database (runs_app.worker.code).

What goes in: the folder's regular files and the links inside it that point inside it.
What stays out: `.git`, caches (`__pycache__`, `.venv`, tools' caches, `*.pyc`), links that
lead out of the folder, anything that is not a file. A folder larger than BUNDLE_MAX_MB is
refused with a clear error (its pipeline cannot run until it is smaller).

Discovery bundles every valid pipeline (a sync's discovery: the new commit). Starting a run
of a PIPELINES_DIR pipeline bundles its folder again when it changed since — so "edit
main.py, press Run" works without a discovery — but only on the node that discovered it
(another node's folder at that path may be another copy), and a pipeline from git only ever
changes by a sync. The folder's fingerprint (names, sizes, times) is kept on the pipeline,
so that check costs one walk over the folder's entries.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction

from pipelines_app.checkouts import commit_of
from pipelines_app.models import CodeBundle, Pipeline

LEFT_OUT_NAMES = {
    ".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    ".ipynb_checkpoints", ".DS_Store",
}  # fmt: skip
LEFT_OUT_SUFFIXES = (".pyc", ".pyo")


class BundleError(Exception):
    """Why a folder cannot become a bundle, in words for its pipeline's page."""


@dataclass(frozen=True)
class Entry:
    name: str  # relative, with "/"
    path: Path
    size: int
    mtime_ns: int
    executable: bool
    link: str = ""  # a link's target (relative, inside the folder)


def entries(folder: Path) -> list[Entry]:
    """What a bundle of `folder` holds, sorted; BundleError when it is too large."""
    limit = settings.BUNDLE_MAX_MB * 1024**2
    real_root = folder.resolve()
    found: list[Entry] = []
    total = 0
    for directory, dirnames, filenames in os.walk(folder):
        here = Path(directory)
        names = [*dirnames, *filenames]
        dirnames[:] = sorted(
            name
            for name in dirnames
            if name not in LEFT_OUT_NAMES and not (here / name).is_symlink()
        )
        for name in names:
            path = here / name
            if name in LEFT_OUT_NAMES or name.endswith(LEFT_OUT_SUFFIXES):
                continue
            info = path.lstat()
            relative = path.relative_to(folder).as_posix()
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                resolved = (path.parent / target).resolve()
                if not os.path.isabs(target) and resolved.is_relative_to(real_root):
                    found.append(Entry(relative, path, 0, info.st_mtime_ns, False, target))
            elif stat.S_ISREG(info.st_mode):
                total += info.st_size
                if total > limit:
                    raise BundleError(
                        f"the folder holds more than BUNDLE_MAX_MB ({settings.BUNDLE_MAX_MB} MB) "
                        "of files: its code travels to worker nodes as one bundle. Keep data "
                        "out of the pipeline folder (a data_folder, or download it in the "
                        "run), or raise BUNDLE_MAX_MB"
                    )
                executable = bool(info.st_mode & 0o111)
                found.append(Entry(relative, path, info.st_size, info.st_mtime_ns, executable))
    return sorted(found, key=lambda entry: entry.name)


def fingerprint(folder: Path, listed: list[Entry] | None = None) -> str:
    """Changes whenever a bundle of the folder would (and, rarely, when only a time did)."""
    digest = hashlib.sha256()
    for entry in entries(folder) if listed is None else listed:
        digest.update(
            f"{entry.name}\0{entry.size}\0{entry.mtime_ns}\0{entry.executable}\0{entry.link}\n".encode()
        )
    return digest.hexdigest()


def archive(folder: Path, listed: list[Entry] | None = None) -> tuple[bytes, int]:
    """The deterministic tar archive of `folder` and how many entries it holds."""
    buffer = io.BytesIO()
    listed = entries(folder) if listed is None else listed
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in listed:
            info = tarfile.TarInfo(entry.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if entry.link:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
                tar.addfile(info)
                continue
            info.mode = 0o755 if entry.executable else 0o644
            with open(entry.path, "rb") as content:
                data = content.read()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), len(listed)


def safe_extract(tar: tarfile.TarFile, destination: Path) -> None:
    """Unpack regular files, folders and links that stay inside `destination`, refusing
    anything else (tarfile's own filters need Python 3.11.4; Debian's 3.11 is older)."""
    root = destination.resolve()
    destination.mkdir(parents=True, exist_ok=True)
    for member in tar.getmembers():
        target = (destination / member.name).resolve()
        if os.path.isabs(member.name) or not target.is_relative_to(root) or target == root:
            raise tarfile.TarError(f"{member.name!r} leaves the folder it is unpacked into")
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            with open(target, "wb") as copy:
                shutil.copyfileobj(source, copy)
            target.chmod(0o755 if member.mode & 0o111 else 0o644)
        elif member.issym():
            pointed = (target.parent / member.linkname).resolve()
            if os.path.isabs(member.linkname) or not pointed.is_relative_to(root):
                raise tarfile.TarError(f"the link {member.name!r} leads out of the folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(member.linkname, target)
        else:
            raise tarfile.TarError(f"{member.name!r} is not a file, a folder or a link")


def store(folder: Path, listed: list[Entry] | None = None) -> CodeBundle:
    """The bundle of `folder`'s content, stored now unless it already is."""
    data, files = archive(folder, listed)
    sha = hashlib.sha256(data).hexdigest()
    found = CodeBundle.objects.filter(sha256=sha).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return CodeBundle.objects.create(
                sha256=sha, size=len(data), files=files, data=zlib.compress(data, 6)
            )
    except IntegrityError:  # another process stored the same content meanwhile
        return CodeBundle.objects.get(sha256=sha)


def bundle_folder(pipeline: Pipeline) -> CodeBundle:
    """Discovery's: the bundle of the pipeline's folder as it is now, which the pipeline
    names from now on (stored unless the same content already is)."""
    folder = Path(pipeline.folder_path)
    listed = entries(folder)  # one walk for the fingerprint and, when it changed, the archive
    now = fingerprint(folder, listed)
    if pipeline.bundle_id is not None and now == pipeline.bundle_fingerprint:
        if pipeline.bundle_node != settings.WORKER_NAME:
            Pipeline.objects.filter(pk=pipeline.pk).update(bundle_node=settings.WORKER_NAME)
            pipeline.bundle_node = settings.WORKER_NAME
        return pipeline.bundle
    bundle, commit = store(folder, listed), commit_of(folder)
    fields = {
        "bundle": bundle,
        "bundle_fingerprint": now,
        "bundle_commit": commit,
        "bundle_node": settings.WORKER_NAME,
    }
    Pipeline.objects.filter(pk=pipeline.pk).update(**fields)
    for name, value in fields.items():
        setattr(pipeline, name, value)
    return bundle


def bundle_for_run(pipeline: Pipeline) -> CodeBundle:
    """The code a run queued now runs: a PIPELINES_DIR pipeline's folder bundled again when
    it changed (on the node that discovered it), else the pipeline's bundle."""
    edited_here = (
        pipeline.bundle_node == settings.WORKER_NAME
        and not pipeline.bundle_commit  # a git checkout changes only by a sync
        and Path(pipeline.folder_path).is_dir()
    )
    if edited_here:
        return bundle_folder(pipeline)
    if pipeline.bundle_id is None:
        raise BundleError(
            "its code was never bundled: run discovery on the node that holds the pipelines"
        )
    return pipeline.bundle
