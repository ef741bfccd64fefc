"""The worker image's root file system, for sandboxed runs: the same Python, uv and
libraries as a Docker run.

It is unpacked from the Docker engine once per image id (`docker export` of a container
made and never started) into DATA_DIR/sandbox/roots/<id>, and mounted read-only by every
run of that image. Unpacking drops what a run must not have: device files (a run gets a
minimal /dev of its own) and set-uid/set-gid bits (tarfile's "tar" filter). The mount
points the sandbox binds into are made in it, as a root that is read-only cannot gain them
later. When the engine is away, the root last unpacked for the image's name is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import tarfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from docker.errors import APIError, DockerException

from runs_app.executors import engine
from runs_app.executors.base import EngineUnavailable, ExecutorError
from runs_app.executors.layout import CA_PATH, CACHE_DIR, CODE_DIR, DATA_MOUNT, TOOLS_DIR, WORK_DIR

# Folders and files the sandbox mounts over; made in every unpacked root.
MOUNT_FOLDERS = (CODE_DIR, TOOLS_DIR, DATA_MOUNT, CACHE_DIR, WORK_DIR, "/tmp", "/proc", "/dev")  # noqa: S108
MOUNT_FILES = (CA_PATH, "/etc/resolv.conf", "/etc/hosts")
# Roots kept: the newest few (a run of a just-replaced image may still use the previous).
KEEP_ROOTS = 3
_lock = threading.Lock()
# Roots this process found: (roots folder, image name, id asked for) → root.
_known: dict[tuple[Path, str, str | None], Root] = {}


@dataclass(frozen=True)
class Root:
    path: Path
    image_id: str
    env: dict[str, str]  # the image's own variables (PATH, LANG)
    uv_version: str  # `uv --version` in it, read once ("" when it could not be)


def roots_dir() -> Path:
    return Path(settings.SANDBOX_ROOTS_DIR)


def root_for(image: str, image_id: str | None) -> Root:
    """The unpacked root of `image` (whose id the engine gave, or None: the engine is away,
    so the one last unpacked for this name)."""
    folder = roots_dir()
    known_root = _known.get((folder, image, image_id))
    if known_root is not None and known_root.path.is_dir():
        return known_root  # every run asks: the files need not be read each time
    if image_id is None:
        known = _names(folder).get(image)
        if not known or not (folder / _short(known)).is_dir():
            raise EngineUnavailable(
                f"The Docker engine cannot be reached, and the worker image {image} was never "
                "unpacked for the sandbox here"
            )
        image_id = known
    target = folder / _short(image_id)
    if not target.is_dir():
        with _lock, _file_lock(folder):
            if not target.is_dir():
                _unpack(image_id, target)
                _prune(folder, keep=target)
    names = _names(folder)
    if names.get(image) != image_id:
        with _lock, _file_lock(folder):
            names = _names(folder) | {image: image_id}
            _write_json(folder / "names.json", names)
    described = json.loads((folder / f"{_short(image_id)}.json").read_text())
    root = Root(target, image_id, described["env"], described["uv_version"])
    _known[(folder, image, image_id)] = root
    return root


def _unpack(image_id: str, target: Path) -> None:
    """Export a container of the image (never started) and unpack it beside `target`,
    then move it into place: a root is either whole or absent."""
    try:
        with engine.reachable("stopped answering while the image was unpacked"):
            api = engine.connect().api
            config = api.inspect_image(image_id)["Config"] or {}
            container = api.create_container(image_id, command=["true"], network_disabled=True)
    except (APIError, DockerException) as exc:
        message = f"The worker image could not be unpacked: {exc}"
        raise ExecutorError("image_missing", message) from exc
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        partial.mkdir(parents=True)
        with engine.reachable("stopped answering while the image was unpacked"):
            stream = api.export(container["Id"])
            with _StreamFile(stream) as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
                for member in archive:
                    if member.isdev():
                        continue
                    archive.extract(member, partial, filter="tar", numeric_owner=True)
        for folder in MOUNT_FOLDERS:
            (partial / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for file in MOUNT_FILES:
            path = partial / file.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            path.touch()
        if not (partial / "usr/bin/setpriv").is_file():
            raise ExecutorError(
                "image_missing",
                "The worker image has no /usr/bin/setpriv (util-linux), which the sandbox "
                "uses to become the run's user; build it from runs_app/worker_image",
            )
        partial.chmod(0o755)
        variables = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
        described = {"env": variables, "uv_version": _uv_version(partial)}
        _write_json(target.with_name(f"{target.name}.json"), described)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        with contextlib.suppress(APIError, DockerException, EngineUnavailable), engine.reachable():
            api.remove_container(container["Id"], force=True)


def _uv_version(root: Path) -> str:
    """The image's uv, asked in a bare sandbox of its own root (every run says it)."""
    command = [
        "bwrap", "--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
        "--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev",
        "--", "uv", "--version",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


class _StreamFile:
    """docker-py's export generator as a file tarfile can read in stream mode."""

    def __init__(self, chunks) -> None:
        self.chunks = iter(chunks)
        self.buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.buffer += chunk
        if size < 0:
            size = len(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def __enter__(self) -> _StreamFile:
        return self

    def __exit__(self, *exc) -> None:
        close = getattr(self.chunks, "close", None)
        if close:
            close()


def _prune(folder: Path, keep: Path) -> None:
    roots = sorted(
        (entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    for old in [root for root in roots if root != keep][KEEP_ROOTS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
        old.with_name(f"{old.name}.json").unlink(missing_ok=True)


def _names(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / "names.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:16]


@contextlib.contextmanager
def _file_lock(folder: Path):
    """Between worker processes of this machine: one unpacks, the others wait for it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
