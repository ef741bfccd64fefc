"""A sandboxed run's place on this machine: a number that names its cgroup, its network
namespace and its addresses, held by the worker process that follows the run.

Places are folders under /run/fastflow-sandbox (gone with a reboot, like network namespaces
and cgroups): made with one atomic mkdir, so worker processes of one machine never share
one, with the holder's pid and start time inside. A place whose holder is gone — a worker
that died, and its sandboxes with it (--die-with-parent) — is swept: its cgroup's
processes killed and the cgroup removed, its namespace and veth pair deleted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import time
from pathlib import Path

from django.conf import settings

from runs_app.executors.sandbox import cgroups, network
from runs_app.executors.sandbox.cgroups import RunCgroup
from runs_app.executors.sandbox.network import RunNetwork

STATE_DIR = Path("/run/fastflow-sandbox")


class NoPlace(Exception):
    pass


def capacity() -> int:
    return ipaddress.ip_network(settings.SANDBOX_NETWORK).num_addresses // 4


def take(run_id: str) -> int:
    """A free place for the run, held by this process from now on."""
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
