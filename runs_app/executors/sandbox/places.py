"""A sandboxed run's place on this machine: a number that names its cgroup, its network
namespace and its addresses, held by the worker process that follows the run.

Places are folders under /run/fastflow-sandbox (gone with a reboot, like network namespaces
and cgroups): made with one atomic mkdir, so worker processes of one machine never share
one, with the holder's pid and start time inside. Each worker process keeps a couple of
places with their network made ahead (a namespace is never given to a second run), and
releases a run's place in a thread of its own once the run ended. A place whose holder
is gone — a worker that died, and its sandboxes with it (--die-with-parent) — is swept:
its cgroup's processes killed and the cgroup removed, its namespace and veth pair deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import queue
import random
import shutil
import threading
import time
from pathlib import Path

from django.conf import settings

from runs_app.executors.sandbox import cgroups, network
from runs_app.executors.sandbox.cgroups import RunCgroup
from runs_app.executors.sandbox.network import RunNetwork

STATE_DIR = Path("/run/fastflow-sandbox")
SPARE_NETWORKS = 2
logger = logging.getLogger(__name__)


class NoPlace(Exception):
    pass


def capacity() -> int:
    return ipaddress.ip_network(settings.SANDBOX_NETWORK).num_addresses // 4


def take(run_id: str, *, with_network: bool) -> tuple[int, bool]:
    """A free place for the run, held by this process from now on, and whether its network
    is made already (a spare made ahead: the run need not wait for it)."""
    if with_network and (place := _spares.take()) is not None:
        (STATE_DIR / str(place) / "run").write_text(run_id)
        return place, True
    return _new_place(run_id), False


def _new_place(run_id: str) -> int:
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    count = capacity()
    start = random.randrange(count)  # noqa: S311 - spreads concurrent takers, not a secret
    for offset in range(count):
        place = (start + offset) % count
        if place == 0:
            continue  # its /30 holds the network's own address
        folder = STATE_DIR / str(place)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        (folder / "holder").write_text(_me())
        (folder / "run").write_text(run_id)
        return place
    raise NoPlace(f"all {count - 1} places of SANDBOX_NETWORK are taken")


def release(place: int) -> None:
    """Remove everything of the place and give it up."""
    RunCgroup(cgroup_name(place)).remove()
    with contextlib.suppress(network.NetworkError):
        RunNetwork(place).remove()
    shutil.rmtree(STATE_DIR / str(place), ignore_errors=True)


def release_soon(place: int) -> None:
    """Release the place in a thread of its own: deleting a network namespace takes the
    kernel tens of milliseconds, which the run's end need not wait for. (Whatever the
    process leaves at its end is swept by the next.)"""
    _releaser.put(place)


class _Spares:
    """Places with their network made ahead, SPARE_NETWORKS of them, by a thread of this
    process: each is a fresh namespace, never one a run had."""

    def __init__(self) -> None:
        self.ready: list[int] = []
        self.lock = threading.Lock()
        self.wanted = threading.Event()
        self.thread: threading.Thread | None = None

    def take(self) -> int | None:
        with self.lock:
            place = self.ready.pop(0) if self.ready else None
            self.thread = _running(self.thread, self._make, "sandbox-spares")
        self.wanted.set()
        return place

    def _make(self) -> None:
        while True:
            self.wanted.wait()
            self.wanted.clear()
            while len(self.ready) < SPARE_NETWORKS:
                place = _new_place("")
                try:
                    RunNetwork(place).create()
                except (network.NetworkError, OSError):
                    logger.warning("a spare sandbox network could not be made", exc_info=True)
                    release(place)
                    break  # runs make their own; tried again at the next run
                with self.lock:
                    self.ready.append(place)


class _Releaser:
    def __init__(self) -> None:
        self.places: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def put(self, place: int) -> None:
        self.places.put(place)
        with self.lock:
            self.thread = _running(self.thread, self._release, "sandbox-releaser")

    def _release(self) -> None:
        while True:
            place = self.places.get()
            try:
                release(place)
            except OSError:
                logger.warning("sandbox place %s could not be released", place, exc_info=True)


def _running(thread: threading.Thread | None, target, name: str) -> threading.Thread:
    """`thread` while it runs, else a new one of `target`, started (one that died on an
    error it did not expect is replaced by the next call)."""
    if thread is not None and thread.is_alive():
        return thread
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


_spares = _Spares()
_releaser = _Releaser()


def cgroup_name(place: int) -> str:
    return f"run-{place}"


def sweep() -> list[int]:
    """Release every place (and every run cgroup or namespace without one) whose holder is
    not alive; the places released."""
    held = set()
    try:
        entries = [entry for entry in STATE_DIR.iterdir() if entry.name.isdigit()]
    except FileNotFoundError:
        entries = []
    for entry in entries:
        try:
            holder = (entry / "holder").read_text()
        except FileNotFoundError:
            holder = ""  # being made right now, or half made by a dead worker
            if _young(entry):
                held.add(int(entry.name))
                continue
        if holder and _alive(holder):
            held.add(int(entry.name))
    leftovers = {int(name[4:]) for name in cgroups.existing() if name[4:].isdigit()}
    candidates = {int(entry.name) for entry in entries} | leftovers | set(network.existing())
    swept = sorted(candidates - held)
    for place in swept:
        release(place)
    return swept


def _me() -> str:
    return f"{os.getpid()} {_start_time(os.getpid())}"


def _alive(holder: str) -> bool:
    pid, _, started = holder.partition(" ")
    return pid.isdigit() and _start_time(int(pid)) == started


def _start_time(pid: int) -> str:
    """The process's start time since boot (a reused pid has another one)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] == "Z" else fields[19]


def _young(entry: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return time.time() - entry.stat().st_mtime < 60
    return False
