"""Keeping the container pool full (a thread of `manage.py worker`).

`PoolKeeper` refills the pool when containers are taken
or die (it waits on the engine's events, not a timer), replaces containers made for an older
profile, removes what dead workers left, and empties its pool when the worker stops.

The pool follows demand: while runs find it empty (they wait for a fresh container) its
target doubles, up to RUN_POOL_MAX; after POOL_IDLE_SECONDS without a run taking one it
halves, down to RUN_POOL_SIZE, and the surplus containers are removed.
The pool itself — which container a run may take, and the hand-over — is
runs_app.executors.pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from docker.errors import DockerException, NotFound
from docker.types import Mount

from runs_app.executors import EngineUnavailable, ExecutorError
from runs_app.executors.engine import ENGINE_ERRORS
from runs_app.executors.layout import (
    CODE_DIR,
    LABEL_PIPELINE,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_SLOT,
    RUN_UID,
    RUN_USER,
    TOOLS_DIR,
    host_config,
    slot_dir,
)
from runs_app.executors.local import process_alive
from runs_app.executors.pool import (
    DEMAND,
    HANDOVER_DIR,
    POOL_NAME_PREFIX,
    PooledDockerExecutor,
    Profile,
    claim,
    current_profile,
    pool_root,
)
from runs_app.worker.loops import KeptThread, Loop, Threads

logger = logging.getLogger(__name__)

LABEL_OWNER = "fastflow.pool.owner"
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
# After this long without a run taking a container, the pool's target halves.
POOL_IDLE_SECONDS = 60.0


class PoolKeeper:
    """Keeps containers of the current profile ready for this worker's runs: at least `size`
    (RUN_POOL_SIZE), more while runs find none ready (up to `maximum`, RUN_POOL_MAX)."""

    def __init__(self, owner: str, size: int | None = None, maximum: int | None = None) -> None:
        self.owner = owner
        self.size = settings.RUN_POOL_SIZE if size is None else size
        self.maximum = max(self.size, settings.RUN_POOL_MAX if maximum is None else maximum)
        self.target = self.size
        self.last_take = time.monotonic()
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

    def state(self) -> dict:
        """For the node's report: containers ready, the target now, and the most."""
        return {"ready": self.ready, "target": self.target, "max": self.maximum}

    def adapt(self) -> None:
        """Follow demand: double the target while runs find the pool empty, halve it after
        an idle spell."""
        taken, missed = DEMAND.read()
        now = time.monotonic()
        if taken or missed:
            self.last_take = now
        if missed and self.target < self.maximum:
            self.target = min(self.maximum, max(self.target * 2, 1))
            logger.info("runs found the pool empty: it grows to %s", self.target)
        elif now - self.last_take >= POOL_IDLE_SECONDS and self.target > self.size:
            self.target = max(self.size, self.target // 2)
            self.last_take = now  # the next halving after another idle spell
            logger.info("the pool has been idle: it shrinks to %s", self.target)

    def refill(self) -> None:
        self.adapt()
        profile = current_profile(self.executor)
        ready = 0
        for container in self.idle(mine=True):
            labels = container["Labels"]
            usable = (
                container.get("State") == "running"
                and labels.get(LABEL_POOL) == profile.digest
                and container.get("ImageID") == profile.image_id
            )
            if usable and ready < self.target:
                ready += 1
            else:
                # Died, made for an older image or layout, or beyond the target now.
                self.discard(container)
        self.ready = ready
        missing = max(self.target - ready, 0)
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
        while left >= max(self.target // 2, 1) and time.monotonic() < deferred_until:
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
