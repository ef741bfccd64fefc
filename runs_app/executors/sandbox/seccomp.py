"""Docker's default seccomp profile, compiled to the BPF program bubblewrap loads.

The profile (docker-default-seccomp.json, README.md says where from) is an allow list:
every system call it does not name fails with EPERM — mount, unshare, setns, keyctl, bpf,
ptrace of other processes' memory, kernel modules, clock changes, reboot, namespaces by
clone (clone3 answers ENOSYS, so libc falls back to clone, which is checked) … Rules that
apply only to a process holding a capability are left out: a sandboxed run holds none.
Other architectures' calls (32-bit and x32 on x86_64) are killed: a run is the native
Python of the worker image.
"""

from __future__ import annotations

import errno
import json
import os
import platform
from functools import cache
from pathlib import Path

import pyseccomp

PROFILE = Path(__file__).with_name("docker-default-seccomp.json")
# Docker names architectures as Go does.
GO_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}
OPERATORS = {
    "SCMP_CMP_NE": pyseccomp.NE,
    "SCMP_CMP_LT": pyseccomp.LT,
    "SCMP_CMP_LE": pyseccomp.LE,
    "SCMP_CMP_EQ": pyseccomp.EQ,
    "SCMP_CMP_GE": pyseccomp.GE,
    "SCMP_CMP_GT": pyseccomp.GT,
    "SCMP_CMP_MASKED_EQ": pyseccomp.MASKED_EQ,
}


def filter_fd() -> int:
    """A file descriptor holding the compiled filter, at its start (bwrap --seccomp FD);
    the caller closes it once bwrap has started."""
    fd = os.memfd_create("fastflow-seccomp", os.MFD_CLOEXEC)
    os.write(fd, compiled())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@cache
def compiled() -> bytes:
    profile = json.loads(PROFILE.read_text())
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    seccomp_filter = pyseccomp.SyscallFilter(default)
    architecture = GO_ARCHITECTURES.get(platform.machine(), platform.machine())
    kernel = _kernel_version()
    for rule in profile["syscalls"]:
        if not _applies(rule, architecture, kernel):
            continue
        action = _action(rule["action"], rule.get("errnoRet"))
        if action == default:
            continue
        for conditions in _condition_sets(rule.get("args") or []):
            for name in rule["names"]:
                try:
                    seccomp_filter.add_rule(action, name, *conditions)
                except (ValueError, RuntimeError, OSError):
                    continue  # a call this architecture (or libseccomp) does not have
    memory = os.memfd_create("fastflow-seccomp-build", os.MFD_CLOEXEC)
    with os.fdopen(memory, "w+b") as program:
        seccomp_filter.export_bpf(program)
        program.seek(0)
        return program.read()


def _action(name: str, errno_value: int | None) -> int:
    if name == "SCMP_ACT_ALLOW":
        return pyseccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return pyseccomp.ERRNO(errno_value or errno.EPERM)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return pyseccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return pyseccomp.KILL_PROCESS
    raise ValueError(f"seccomp action {name} is not one Fast-Flow compiles")


def _applies(rule: dict, architecture: str, kernel: tuple[int, ...]) -> bool:
    """Docker's own reading of includes and excludes, for a process with no capabilities."""
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if includes.get("caps"):
        return False
    if includes.get("arches") and architecture not in includes["arches"]:
        return False
    if architecture in (excludes.get("arches") or ()):
        return False
    minimum = includes.get("minKernel")
    return not minimum or kernel >= tuple(int(part) for part in minimum.split("."))


def _condition_sets(arguments: list[dict]) -> list[list]:
    """Conditions on different arguments must all hold (one rule); several on the same
    argument are alternatives (a rule each), as Docker adds them."""
    conditions = [
        pyseccomp.Arg(
            argument["index"],
            OPERATORS[argument["op"]],
            argument["value"],
            argument.get("valueTwo", 0),
        )
        for argument in arguments
    ]
    indexes = [argument["index"] for argument in arguments]
    if len(set(indexes)) == len(indexes):
        return [conditions]
    return [[condition] for condition in conditions]


def _kernel_version() -> tuple[int, ...]:
    numbers = []
    for part in platform.release().split("-")[0].split(".")[:2]:
        digits = "".join(character for character in part if character.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)
