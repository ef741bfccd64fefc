"""The container pool: run containers made and started before their run exists.

Creating and starting a locked-down container costs the engine ~0.25 s on a small machine;
a run should not wait for it. So each worker keeps RUN_POOL_SIZE containers ready — made
from the same layout as any run container (runs_app.executors.layout: same image,
lock-down, tmpfs, cache mounts, network, the instance's limits), holding no secrets and no
code, their only process `receive.py` waiting on a hand-over pipe. A run takes one:

1. claim: an exclusive file in the container's slot (DATA_DIR/pool/<token>); exactly one
   process wins, whichever worker made the container;
2. rename it `fastflow-run-<run id>` (how a successor finds the run's container);
3. link the pipeline's files into the slot's `code` folder, mounted read-only at /pipeline
   (hard links, a copy where they cannot be made; links stay links, nothing else is taken);
4. apply the run's own limits when they differ from the instance's (the engine's update);
5. record the container on the run, then write the run's environment and command to the
   pipe; the receiver execs prepare.sh, exactly the command a fresh container would run.

A container serves one run: it is removed after its run like any other, and a claimed or
stale one is never offered again. When no ready container fits (pool empty, the image or
the layout changed since it was made, code on another file system than DATA_DIR, a run
without limits), the run gets a fresh container as before: the pool only ever saves time.

The worker keeps the pool full: runs_app.worker.pool_keeper.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from docker.errors import APIError

from runs_app.executors import engine
from runs_app.executors.base import (
    Outcome,
    RunSpec,
    Watch,
)
from runs_app.executors.docker import DockerExecutor
from runs_app.executors.follower import ContainerFollower
from runs_app.executors.layout import (
    CODE_DIR,
    IMAGE_VERSION,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_SLOT,
    Layout,
    container_layout,
    run_command,
    run_container_name,
    run_environment,
    slot_dir,
)
from runs_app.logs import LogWriter

logger = logging.getLogger(__name__)

POOL_NAME_PREFIX = "fastflow-pool-"
# Where a pooled container sees its slot's control folder (the hand-over pipe).
HANDOVER_DIR = "/fastflow-handover"
# A container started a moment ago may not have opened its pipe yet.
LISTEN_WAIT_SECONDS = 2.0


class HandOverFailed(Exception):
    """This pooled container cannot take the run (it died, the engine refused a limit)."""


@dataclass(frozen=True)
class Profile:
    """What a pooled container was made as; one that differs in anything is not handed out."""

    digest: str
    image_id: str
    layout: Layout
    memory: int | None
    cpu: float | None


def current_profile(executor: DockerExecutor) -> Profile:
    image_id = executor.check_image()
    layout = container_layout(executor.api, warm=False)
    memory, cpu = settings.RUN_MEMORY_LIMIT or None, settings.RUN_CPU_LIMIT or None
    described = {
        "image": image_id,
        "image_version": IMAGE_VERSION,
        "mounts": layout.mounts,
        "tmpfs": layout.tmpfs,
        "env": layout.env,
        "memory": memory,
        "cpu": cpu,
        "pids": settings.RUN_PIDS_LIMIT,
        "network": settings.RUN_NETWORK,
        "log_max_mb": settings.LOG_MAX_SIZE_MB,
        "slots": str(pool_root()),
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return Profile(digest, image_id, layout, memory, cpu)


def pool_root() -> Path:
    return Path(settings.DATA_DIR) / "pool"


class Demand:
    """How this process's runs met the pool since the keeper last looked: containers they
    took, and runs that could have taken one but found none ready (so waited for a fresh
    container). The keeper sizes the pool by it (runs_app.worker.pool_keeper)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.taken = self.missed = 0

    def took(self) -> None:
        with self.lock:
            self.taken += 1

    def found_none(self) -> None:
        with self.lock:
            self.missed += 1

    def read(self) -> tuple[int, int]:
        """(taken, missed) since the last read."""
        with self.lock:
            counts, self.taken, self.missed = (self.taken, self.missed), 0, 0
        return counts


DEMAND = Demand()


@dataclass
class Handed:
    container_id: str
    at: datetime


class PooledDockerExecutor(DockerExecutor):
    """The Docker executor that starts runs in pooled containers when one fits."""

    def __init__(self) -> None:
        super().__init__()
        self.slots: dict[str, str] = {}  # container id → slot token, of those it handed out

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        if spec.purpose == "run":
            with engine.reachable("stopped answering"):
                handed = self.take(spec, watch)
            if handed is not None:
                follower = ContainerFollower(self.api, handed.container_id, spec, log, watch, {})
                return follower.follow(started_at=handed.at)
        return super().start(spec, log, watch)

    def take(self, spec: RunSpec, watch: Watch) -> Handed | None:
        """Hand the run to a ready container of the current profile; None: make a fresh one."""
        profile = current_profile(self)
        if not fits(profile, spec):
            return None
        for container in ready_containers(self.api, profile):
            token = container["Labels"][LABEL_SLOT]
            if not claim(token):
                continue  # another follower took it first
            container_id = container["Id"]
            self.slots[container_id] = token
            try:
                self.api.rename(container_id, run_container_name(spec.run_id))
                link_tree(spec.folder, slot_dir(token) / "code")
                apply_limits(self.api, container_id, profile, spec)
                watch.on_started(container_id)
                DEMAND.took()
                return Handed(container_id, hand_over(token, spec, profile.layout))
            except (HandOverFailed, APIError, OSError) as exc:
                logger.warning("pooled container %s not used: %s", container_id[:12], exc)
                self.remove(container_id)
                return None
        DEMAND.found_none()
        return None

    def remove(self, handle: str) -> None:
        super().remove(handle)
        token = self.slots.pop(handle, None)
        if token:
            shutil.rmtree(slot_dir(token), ignore_errors=True)


def fits(profile: Profile, spec: RunSpec) -> bool:
    """Whether a pooled container can become this run's: its code is on DATA_DIR's file
    system (hard links), it needs no other image and no data folder, and a limit the run
    lacks is not one the container has (the engine can change a limit, not take it away)."""
    if spec.image and spec.image != settings.WORKER_IMAGE:
        return False  # pooled containers are of WORKER_IMAGE (PYTHON_IMAGES pick others)
    if spec.data_dir is not None:
        return False  # a mount cannot be added to a started container
    if not spec.network:
        return False  # pooled containers are on RUN_NETWORK; this run has none
    if profile.memory and not spec.mem_hard_limit_bytes:
        return False
    if profile.cpu and not spec.cpu_hard_limit:
        return False
    try:
        return spec.folder.stat().st_dev == pool_root().stat().st_dev
    except OSError:
        return False


def ready_containers(api, profile: Profile) -> list[dict]:
    """Running, unclaimed pooled containers of this profile, the longest-waiting first."""
    found = api.containers(
        filters={
            "label": [LABEL_RUN, f"{LABEL_POOL}={profile.digest}"],
            "status": "running",
            "name": f"^/{POOL_NAME_PREFIX}",
        }
    )
    found = [c for c in found if c.get("ImageID") == profile.image_id]
    return sorted(found, key=lambda c: c.get("Created", 0))


def claim(token: str) -> bool:
    try:
        os.close(os.open(slot_dir(token) / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except (FileExistsError, FileNotFoundError):
        return False
    return True


def link_tree(source: Path, target: Path) -> None:
    """The pipeline's folder into the slot: folders, regular files (hard-linked, copied when
    a link cannot be made) and symbolic links as links — never followed, so a planted link
    means inside the container what it means in a bind mount. Anything else is left out."""
    for root, dirs, files in os.walk(source, followlinks=False):
        relative = Path(root).relative_to(source)
        into = target / relative
        for name in [*dirs, *files]:
            origin, copy = Path(root) / name, into / name
            info = origin.lstat()
            if stat.S_ISLNK(info.st_mode):
                copy.symlink_to(os.readlink(origin))
            elif stat.S_ISDIR(info.st_mode):
                copy.mkdir(mode=stat.S_IMODE(info.st_mode))
            elif stat.S_ISREG(info.st_mode):
                try:
                    os.link(origin, copy, follow_symlinks=False)
                except OSError:  # protected_hardlinks, a file system without links
                    shutil.copy2(origin, copy, follow_symlinks=False)
        dirs[:] = [name for name in dirs if not (Path(root) / name).is_symlink()]


def apply_limits(api, container_id: str, profile: Profile, spec: RunSpec) -> None:
    """The run's memory and CPU limits, when they are not the instance's the pool made."""
    update: dict = {}
    memory = spec.mem_hard_limit_bytes
    if memory and memory != profile.memory:
        update.update(Memory=memory, MemorySwap=memory)
    if spec.cpu_hard_limit and spec.cpu_hard_limit != profile.cpu:
        update["NanoCpus"] = int(spec.cpu_hard_limit * 1e9)
    if not update:
        return
    engine.update_container(api, container_id, update)


def hand_over(token: str, spec: RunSpec, layout: Layout) -> datetime:
    """Write the run to the container's pipe; when it was handed over."""
    pipe = slot_dir(token) / "control" / "job"
    job = {
        "env": run_environment(spec, layout),
        "cwd": CODE_DIR,
        "argv": ["/bin/sh", *run_command(spec)[1:]],
    }
    deadline = time.monotonic() + LISTEN_WAIT_SECONDS
    while True:
        try:
            # Non-blocking: a container that is not (or no longer) listening is an error
            # (ENXIO), not a worker stuck forever.
            fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise HandOverFailed(f"its receiver does not listen ({exc.strerror})") from exc
            time.sleep(0.005)
    handed_at = datetime.now(UTC)
    try:
        pipe.unlink()  # from here on the container counts as handed over (state())
        os.set_blocking(fd, True)
        data = memoryview(json.dumps(job).encode())
        while data:
            data = data[os.write(fd, data) :]
    except OSError as exc:
        raise HandOverFailed(f"the hand-over was cut off ({exc.strerror})") from exc
    finally:
        os.close(fd)
    return handed_at
