"""A Swarm run's first process (runs_app/executors/swarm.py): what a Docker run gets from
its worker's host — code, tools, variables, samples — it makes here, from what Swarm
delivered, and then starts prepare.sh as any run does.

    python3 -I /fastflow-boot.py ENTRY_POINT

- Refuses to start (exit 125, said in the log) where the run could gain privileges: a
  service spec cannot ask for no-new-privileges (moby#41371), so the engines must set it
  for every container (dockerd --no-new-privileges); this checks that they did.
- The run's variables (its secrets among them) come from its own Swarm secret, a JSON
  object, never from the service spec that `docker service inspect` shows.
- Its code and tools arrive as Swarm configs, the parts of one gzipped tar, unpacked into
  the run's own tmpfs (the code read-only: a file's owner can change that, but only in its
  own run's copy).
- The node's uv cache (a volume, read-only) is linked bucket by bucket into the run's own
  cache, as the Docker executor mounts it.
- Its CPU and memory, read from its own cgroup every second, become `sample` markers: the
  manager has no stats for a task. A run killed by its memory cgroup is said so (`oom`).

Standard library only; the image's own python3, before any environment exists.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

MARK = "\x1efastflow:"
# Folders the image does not have: a tmpfs mounted on one of the image's folders takes
# that folder's owner and mode, not its own.
DELIVERY = Path("/run/fastflow-delivery")
SECRET = Path("/run/secrets/fastflow-env")
WORK = Path("/run/fastflow")  # tmpfs: code, tools, HOME, the environment, the route
RUN_CACHE = Path("/run/uv-cache")  # tmpfs: the run's own uv cache
# The node's uv cache volume (read-only for runs), where the image has a folder of the run
# user's: a new volume takes its owner from there.
SHARED_CACHE = Path("/home/fastflow")
PER_RUN_CACHE_BUCKETS = ("builds-", "environments-", "interpreter-")  # layout.py's
WHEELHOUSE = "fastflow-wheels-v1"  # layout.WHEELHOUSE_BUCKET
CGROUP = Path("/sys/fs/cgroup")
SAMPLE_EVERY = 1.0
REFUSED = 125


def tell(word: str, text: str = "") -> None:
    os.write(2, (MARK + word + (" " + text if text else "") + "\n").encode())


def privileges_locked() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("NoNewPrivs:"):
            return line.split()[1] == "1"
    return False


def unpack() -> None:
    """The parts, in name order, are one gzipped tar: pipeline/, tools/ and ca.pem."""
    parts = sorted(DELIVERY.iterdir())
    reader, writer = os.pipe()

    def feed() -> None:
        with os.fdopen(writer, "wb") as sink:
            for part in parts:
                sink.write(part.read_bytes())

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    with os.fdopen(reader, "rb") as source, tarfile.open(fileobj=source, mode="r|gz") as tar:
        for member in tar:
            # Made by the worker, but judged all the same: nothing outside WORK, links only
            # to the code's own files.
            target = (WORK / member.name).resolve()
            if not str(target).startswith(f"{WORK}/"):
                continue
            if member.issym():
                inside = (target.parent / member.linkname).resolve()
                if str(inside).startswith(f"{WORK}/pipeline/"):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(member.linkname)
                continue
            if not (member.isfile() or member.isdir()):
                continue
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as data:
                target.write_bytes(data.read())
            target.chmod(0o555 if member.mode & 0o100 else 0o444)
    feeder.join()


def link_cache(cache: Path) -> None:
    """The shared buckets, read-only, inside the run's own cache (where uv writes what an
    install needs for itself)."""
    cache.mkdir(parents=True, exist_ok=True)
    if SHARED_CACHE.is_dir():
        for bucket in SHARED_CACHE.iterdir():
            if bucket.is_dir() and not bucket.name.startswith((".", *PER_RUN_CACHE_BUCKETS)):
                (cache / bucket.name).symlink_to(bucket)
    # prepare.sh looks for built wheels there: a node that was never warmed has none.
    (cache / WHEELHOUSE).mkdir(exist_ok=True)


class Cgroup:
    """The run's own cgroup counters: v1 (cpuacct, memory) or v2 (unified)."""

    def __init__(self) -> None:
        self.v2 = (CGROUP / "cgroup.controllers").exists()

    def cpu_seconds(self) -> float | None:
        try:
            if self.v2:
                for line in (CGROUP / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            return int((CGROUP / "cpuacct" / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def memory_bytes(self) -> int | None:
        """In use, page cache left out (as docker's stats count it)."""
        folder = CGROUP if self.v2 else CGROUP / "memory"
        try:
            usage = int((folder / ("memory.current" if self.v2 else "memory.usage_in_bytes"))
                        .read_text())  # fmt: skip
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
        except (OSError, ValueError):
            return None
        return max(usage - int(stat.get("inactive_file" if self.v2 else "cache", 0)), 0)

    def oom_kills(self) -> int:
        """How many processes its memory limit killed so far."""
        name = "memory.events" if self.v2 else "memory/memory.oom_control"
        try:
            for line in (CGROUP / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0


def sample(cgroup: Cgroup, done: threading.Event) -> None:
    previous = (time.monotonic(), cgroup.cpu_seconds())
    while not done.wait(SAMPLE_EVERY):
        now, cpu = time.monotonic(), cgroup.cpu_seconds()
        percent = None
        if cpu is not None and previous[1] is not None and now > previous[0]:
            percent = round(max(cpu - previous[1], 0.0) / (now - previous[0]) * 100, 1)
        previous = (now, cpu)
        tell("sample", json.dumps({"cpu": percent, "memory": cgroup.memory_bytes()}))


def main() -> int:
    entry_point = sys.argv[1]
    if not privileges_locked():
        print(
            "Fast-Flow refused to start the run: this Swarm node lets a run gain privileges; "
            "start its Docker engine with --no-new-privileges (a service cannot ask for it)",
            file=sys.stderr,
        )
        return REFUSED
    env = dict(os.environ)
    env.update(json.loads(SECRET.read_text()))
    unpack()
    if env.get("FASTFLOW_WARM_ONLY") != "1":
        link_cache(Path(env["UV_CACHE_DIR"]))
    for folder in ("home", "env"):
        (WORK / folder).mkdir(exist_ok=True)
    cgroup = Cgroup()
    kills_before = cgroup.oom_kills()
    done = threading.Event()
    threading.Thread(target=sample, args=(cgroup, done), daemon=True).start()
    child = subprocess.Popen(  # noqa: S603 (Fast-Flow's own prepare.sh)
        ["/bin/sh", str(WORK / "tools" / "prepare.sh"), entry_point],
        cwd=WORK / "pipeline",
        env=env,
    )
    # A stop (cancel, timeout: Swarm removes the service) reaches the run's code.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: child.send_signal(number))
    code = child.wait()
    done.set()
    if cgroup.oom_kills() > kills_before:
        tell("oom")
    code = 128 - code if code < 0 else code
    tell("exit", str(code))
    return code


if __name__ == "__main__":
    sys.exit(main())
