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

`PoolKeeper` (a thread of `manage.py worker`) refills the pool when containers are taken
or die (it waits on the engine's events, not a timer), replaces containers made for an older
profile, removes what dead workers left, and empties its pool when the worker stops.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount

from runs_app.executors import engine
from runs_app.executors.base import (
    EngineUnavailable,
    ExecutorError,
    Outcome,
    RunSpec,
    Watch,
)
from runs_app.executors.docker import DockerExecutor
from runs_app.executors.engine import ENGINE_ERRORS
from runs_app.executors.follower import ContainerFollower
from runs_app.executors.layout import (
    CODE_DIR,
    IMAGE_VERSION,
    LABEL_PIPELINE,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_SLOT,
    RUN_UID,
    RUN_USER,
    TOOLS_DIR,
    Layout,
    container_layout,
    host_config,
    run_command,
    run_container_name,
    run_environment,
    slot_dir,
)
from runs_app.executors.local import process_alive
from runs_app.logs import LogWriter
from runs_app.worker.loops import KeptThread, Loop, Threads

logger = logging.getLogger(__name__)

HANDOVER_DIR = "/fastflow-handover"
POOL_NAME_PREFIX = "fastflow-pool-"
LABEL_OWNER = "fastflow.pool.owner"
# A container started a moment ago may not have opened its pipe yet.
LISTEN_WAIT_SECONDS = 2.0
# Containers made at once while refilling (the engine starts ~4/s on 2 cores either way).
REFILL_THREADS = 2
# The keeper looks again at least this often, events or not.
IDLE_WAKE_SECONDS = 5.0
# While runs keep taking containers, a refill waits this long for a quiet moment, or this
# long at most.
QUIET_SECONDS, DEFER_SECONDS = 0.5, 3.0
SWEEP_EVERY_SECONDS = 30.0
# A slot folder without a container is left alone this long (its container may be on its way).
ORPHAN_SLOT_SECONDS = 60.0


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
                return Handed(container_id, hand_over(token, spec, profile.layout))
            except (HandOverFailed, APIError, OSError) as exc:
                logger.warning("pooled container %s not used: %s", container_id[:12], exc)
                self.remove(container_id)
                return None
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


# --- keeping the pool ----------------------------------------------------------------------


class PoolKeeper:
    """Keeps `size` containers of the current profile ready for this worker's runs."""

    def __init__(self, owner: str, size: int | None = None) -> None:
        self.owner = owner
        self.size = settings.RUN_POOL_SIZE if size is None else size
        self.executor = PooledDockerExecutor()
        self.stopping = threading.Event()
        self.kept: KeptThread | None = None
        self.keeping = Loop("container pool")
        self.events = None
        self.last_sweep = 0.0
        self.problem = ""
        self.made: set[str] = set()  # every container it made (what tests check against)
        self.ready = 0

    def start(self, threads: Threads | None = None) -> None:
        threads = threads or Threads(self.stopping)
        self.kept = threads.add("container-pool", self.run, [self.keeping])

    def stop(self) -> None:
        """Stop refilling and remove this worker's waiting containers."""
        self.stopping.set()
        with contextlib.suppress(Exception):
            if self.events is not None:
                self.events.close()
        if self.kept is not None:
            self.kept.join(timeout=10)
        with contextlib.suppress(*ENGINE_ERRORS, DockerException):
            for container in self.idle(mine=True):
                self.discard(container)

    def run(self) -> None:
        while not self.stopping.is_set():
            with self.keeping.turn() as turn:
                try:
                    self.refill()
                    self.problem = ""
                except (*ENGINE_ERRORS, EngineUnavailable, ExecutorError, DockerException) as exc:
                    # The engine away is not this loop's failure (the worker's report says
                    # whether it reaches the engine): it waits for it.
                    if str(exc) != self.problem:  # said once, not every few seconds
                        logger.warning("the container pool cannot be filled now: %s", exc)
                    self.problem = str(exc)
            if turn.failed or self.problem:
                self.stopping.wait(IDLE_WAKE_SECONDS)
                continue
            self.wait_for_change()

    def refill(self) -> None:
        profile = current_profile(self.executor)
        ready = 0
        for container in self.idle(mine=True):
            labels = container["Labels"]
            usable = (
                container.get("State") == "running"
                and labels.get(LABEL_POOL) == profile.digest
                and container.get("ImageID") == profile.image_id
            )
            if usable:
                ready += 1
            else:
                self.discard(container)  # died, or made for an older image or layout
        self.ready = ready
        missing = max(self.size - ready, 0)
        if missing and not self.stopping.is_set():
            with ThreadPoolExecutor(min(missing, REFILL_THREADS)) as makers:
                list(makers.map(lambda _: self.make(profile), range(missing)))
        if time.monotonic() - self.last_sweep >= SWEEP_EVERY_SECONDS:
            self.sweep()
            self.last_sweep = time.monotonic()

    def idle(self, *, mine: bool) -> list[dict]:
        """Pooled containers not (yet) claimed by a run: this worker's, or everyone's."""
        labels = [LABEL_RUN, LABEL_POOL] + ([f"{LABEL_OWNER}={self.owner}"] if mine else [])
        found = self.executor.api.containers(
            all=True, filters={"label": labels, "name": f"^/{POOL_NAME_PREFIX}"}
        )
        return [
            c
            for c in found
            if not (slot_dir(c["Labels"].get(LABEL_SLOT, "-")) / "claimed").exists()
        ]

    def make(self, profile: Profile) -> None:
        """One pooled container, started, its receiver about to listen."""
        api = self.executor.api
        token = uuid.uuid4().hex
        slot = slot_dir(token)
        make_slot(slot)
        mounts = [
            Mount(CODE_DIR, str(slot / "code"), type="bind", read_only=True),
            Mount(HANDOVER_DIR, str(slot / "control"), type="bind", read_only=True),
            *profile.layout.mounts,
        ]
        try:
            created = api.create_container(
                # By name, as the engine guard allows; a container of another image than the
                # profile's (retagged meanwhile) is never handed out, and soon replaced.
                settings.WORKER_IMAGE,
                command=["python3", "-I", "-S", f"{TOOLS_DIR}/receive.py"],
                name=f"{POOL_NAME_PREFIX}{token}",
                labels={
                    LABEL_RUN: "",
                    LABEL_PIPELINE: "",
                    LABEL_POOL: profile.digest,
                    LABEL_SLOT: token,
                    LABEL_OWNER: self.owner,
                },
                environment=profile.layout.env,
                working_dir=CODE_DIR,
                user=RUN_USER,
                host_config=host_config(
                    api, mounts, profile.layout.tmpfs, profile.memory, profile.cpu
                ),
            )
            self.made.add(created["Id"])
            api.start(created["Id"])
        except Exception:
            shutil.rmtree(slot, ignore_errors=True)
            raise

    def discard(self, container: dict) -> None:
        token = container["Labels"].get(LABEL_SLOT)
        if token and not claim(token):
            return  # a run took it meanwhile: its own now
        with contextlib.suppress(NotFound):
            self.executor.api.remove_container(container["Id"], force=True)
        if token:
            shutil.rmtree(slot_dir(token), ignore_errors=True)

    def sweep(self) -> None:
        """What stopped workers left: idle containers of this host's dead workers, and slot
        folders whose container is gone (removed after its run, by reconcile or by hand)."""
        host = socket.gethostname()
        for container in self.idle(mine=False):
            owner = container["Labels"].get(LABEL_OWNER, "")
            owner_host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if owner_host == host and pid.isdigit() and not self.owner_alive(owner, int(pid)):
                self.discard(container)
        existing = {
            c["Labels"].get(LABEL_SLOT)
            for c in self.executor.api.containers(
                all=True, filters={"label": [LABEL_RUN, LABEL_SLOT]}
            )
        }
        with contextlib.suppress(FileNotFoundError):
            for slot in pool_root().iterdir():
                age = time.time() - slot.stat().st_mtime
                if slot.name not in existing and age > ORPHAN_SLOT_SECONDS:
                    shutil.rmtree(slot, ignore_errors=True)

    def owner_alive(self, owner: str, pid: int) -> bool:
        """Whether the worker of this host that made a pooled container still runs (this
        very pid with another token is an earlier worker, restarted in the same container)."""
        if pid == os.getpid():
            return owner == self.owner
        return process_alive(pid)

    def wait_for_change(self) -> None:
        """Until a pooled container is taken, dies or is removed (the engine's events), or
        IDLE_WAKE_SECONDS pass. While runs keep taking containers and half the pool is
        still ready, the refill waits for a quiet moment (QUIET_SECONDS without a take, at
        most DEFER_SECONDS): making a container costs the engine the same CPU the runs
        starting and ending now need."""
        if not self.next_event(IDLE_WAKE_SECONDS):
            return
        left, deferred_until = self.ready - 1, time.monotonic() + DEFER_SECONDS
        while left >= max(self.size // 2, 1) and time.monotonic() < deferred_until:
            if not self.next_event(QUIET_SECONDS):
                return
            left -= 1

    def next_event(self, seconds: float) -> bool:
        """Whether a pool event came within `seconds`."""
        since = time.time()
        try:
            self.events = self.executor.api.events(
                since=since,
                until=since + seconds,
                filters={
                    "type": "container",
                    "label": [LABEL_POOL],
                    "event": ["rename", "die", "destroy"],
                },
                decode=True,
            )
            for _event in self.events:
                return True
        except (*ENGINE_ERRORS, DockerException, AttributeError, ValueError, OSError):
            self.stopping.wait(1.0)  # the engine went away, or stop() closed the stream
        finally:
            with contextlib.suppress(Exception):
                self.events.close()
        return False


def make_slot(slot: Path) -> None:
    """The slot's folders and its pipe: the run user reads them (inside the container);
    on the host, DATA_DIR/pool is the orchestrator's alone."""
    root = pool_root()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    (slot / "code").mkdir(parents=True, mode=0o755)
    (slot / "control").mkdir(mode=0o755)
    pipe = slot / "control" / "job"
    os.mkfifo(pipe, 0o600)
    if os.geteuid() == 0:
        os.chown(pipe, RUN_UID, RUN_UID)
    else:
        pipe.chmod(0o604)  # the run user is "other" here; the 0700 pool folder keeps others out
