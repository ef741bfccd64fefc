"""A sandboxed run's own cgroup: its memory, CPU and process limits, its usage, whether the
kernel killed it for memory, and every process it started (to signal or kill them all).

cgroup v2 where the host has it (one folder under /sys/fs/cgroup/fastflow-sandbox), else
v1 (one folder per controller: memory, cpu, cpuacct, pids). Made before the run starts (the
sandbox's first process moves itself in before anything else runs), removed after it ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "fastflow-sandbox"
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
CPU_PERIOD_US = 100_000


def is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").is_file()


def available() -> str:
    """Why run cgroups cannot be made here ("" when they can)."""
    if os.geteuid() != 0:
        return "the sandbox executor makes a cgroup per run, which needs a worker running as root"
    if is_v2():
        controllers = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
        missing = {"memory", "cpu", "pids"} - set(controllers)
    else:
        missing = {c for c in V1_CONTROLLERS if not (CGROUP_ROOT / c).is_dir()}
    if missing:
        return f"the cgroup controllers {', '.join(sorted(missing))} are not mounted"
    return ""


class RunCgroup:
    def __init__(self, name: str) -> None:
        self.name = name
        self.v2 = is_v2()

    @property
    def folders(self) -> list[Path]:
        if self.v2:
            return [CGROUP_ROOT / PARENT / self.name]
        seen, folders = set(), []
        for controller in V1_CONTROLLERS:
            folder = CGROUP_ROOT / controller / PARENT / self.name
            real = os.path.realpath(folder.parent.parent)  # cpu and cpuacct may be one
            if real not in seen:
                seen.add(real)
                folders.append(folder)
        return folders

    def _file(self, controller: str, name: str) -> Path:
        if self.v2:
            return CGROUP_ROOT / PARENT / self.name / name
        return CGROUP_ROOT / controller / PARENT / self.name / name

    @property
    def procs_files(self) -> list[Path]:
        """Where the run's first process writes its pid (every one of them)."""
        return [folder / "cgroup.procs" for folder in self.folders]

    def create(self, memory: int | None, cpu: float | None, pids: int) -> None:
        if self.v2:
            _enable_v2_controllers()
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        if self.v2:
            if memory:
                self._write("memory", "memory.max", memory)
                self._write("memory", "memory.swap.max", 0)
            if cpu:
                self._write("cpu", "cpu.max", f"{int(cpu * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            self._write("pids", "pids.max", pids)
            return
        if memory:
            self._write("memory", "memory.limit_in_bytes", memory)
            # No swap on top of the limit (as Docker's memswap == memory): beyond it is OOM.
            with contextlib.suppress(OSError):  # no swap accounting on this kernel
                self._write("memory", "memory.memsw.limit_in_bytes", memory)
        if cpu:
            self._write("cpu", "cpu.cfs_period_us", CPU_PERIOD_US)
            self._write("cpu", "cpu.cfs_quota_us", int(cpu * CPU_PERIOD_US))
        self._write("pids", "pids.max", pids)

    def _write(self, controller: str, name: str, value: object) -> None:
        self._file(controller, name).write_text(f"{value}\n")

    def _read(self, controller: str, name: str) -> str:
        try:
            return self._file(controller, name).read_text()
        except OSError:
            return ""

    def pids(self) -> list[int]:
        text = self._read("pids", "cgroup.procs")
        return [int(line) for line in text.split()]

    def cpu_seconds(self) -> float | None:
        """CPU time its processes used so far."""
        if self.v2:
            for line in self._read("cpu", "cpu.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            return None
        text = self._read("cpuacct", "cpuacct.usage").strip()
        return int(text) / 1e9 if text else None

    def usage(self) -> tuple[float | None, int | None]:
        """CPU seconds and memory bytes, as a run's samples are made of."""
        return self.cpu_seconds(), self.memory_bytes()

    def memory_bytes(self) -> int | None:
        """Memory in use as `docker stats` counts it: all charged, less inactive file cache."""
        current = self._read("memory", "memory.current" if self.v2 else "memory.usage_in_bytes")
        if not current.strip():
            return None
        inactive_key = "inactive_file" if self.v2 else "total_inactive_file"
        inactive = 0
        for line in self._read("memory", "memory.stat").splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
        return max(int(current) - inactive, 0)

    def oom_kills(self) -> int:
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in self._read("memory", name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def signal(self, number: int, spare: int | None = None) -> None:
        """Send a signal to every process of the run (but `spare`)."""
        for pid in self.pids():
            if pid != spare:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, number)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left in it and remove it (idempotent)."""
        deadline = time.monotonic() + timeout
        while True:
            self.signal(signal.SIGKILL)
            removed = True
            for folder in self.folders:
                try:
                    folder.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    removed = False  # processes still leaving
            if removed or time.monotonic() > deadline:
                return
            time.sleep(0.02)


def existing() -> list[str]:
    """Names of the run cgroups on this machine (live or left by a dead worker)."""
    base = CGROUP_ROOT / PARENT if is_v2() else CGROUP_ROOT / "memory" / PARENT
    try:
        return sorted(entry.name for entry in base.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return []


def _enable_v2_controllers() -> None:
    parent = CGROUP_ROOT / PARENT
    parent.mkdir(exist_ok=True)
    for folder in (CGROUP_ROOT, parent):
        enabled = (folder / "cgroup.subtree_control").read_text().split()
        for controller in ("memory", "cpu", "pids"):
            if controller not in enabled:
                with contextlib.suppress(OSError):
                    (folder / "cgroup.subtree_control").write_text(f"+{controller}\n")
