"""SandboxExecutor: every run in fresh Linux namespaces and a cgroup of its own, started by
bubblewrap without a container engine — the lock-down of a Docker run at the speed of a
process (docs/execution.md compares the executors).

A run is one chain of programs, each handing over to the next with exec:

    sh            moves itself into the run's cgroup (its limits hold from here on)
    nsenter       joins the run's network namespace (network.py; none: bwrap's own, empty)
    bwrap         new mount, pid, ipc, uts and cgroup namespaces; the worker image's root
                  read-only, tmpfs for all a run may write, the code and uv cache read-only,
                  Docker's default seccomp filter, no_new_privs
    sh (image's)  hands its tmpfs folders to the run's user
    setpriv       becomes uid 10001 with no capabilities left, even in its bounding set
    sh prepare.sh the run's environment, then the pipeline, as in a Docker run

bubblewrap runs as root (as a container engine does) and dies with its worker
(--die-with-parent): a sandbox never outlives the process that follows it, so a run whose
worker dies is lost (and retried by its policy), where a Docker run goes on and is
re-attached. Secrets travel in the environment only, never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from django.conf import settings

from runs_app.executors.base import (
    EngineUnavailable,
    ExecutorError,
    Outcome,
    RunSpec,
    Watch,
    ensure_data_folder,
    prepare_environment,
)
from runs_app.executors.docker import DockerExecutor
from runs_app.executors.layout import (
    CA_PATH,
    CACHE_DIR,
    CODE_DIR,
    DATA_MOUNT,
    HOME,
    RUN_CACHE_TMPFS_MB,
    RUN_UID,
    TOOLS_DIR,
    WORK_DIR,
    WORK_TMPFS_MB,
    layout_variables,
    prepare_shared_cache,
    run_ca_bundle,
    shared_buckets,
    shared_tools,
)
from runs_app.executors.local import (
    follow_process,
    pid_of,
    process_alive,
    sample_every_second,
)
from runs_app.executors.sandbox import cgroups, network, places, rootfs, seccomp
from runs_app.executors.sandbox.cgroups import RunCgroup
from runs_app.executors.sandbox.network import NetworkError, RunNetwork
from runs_app.logs import LogWriter

HANDLE_PREFIX = "sandbox:"
# A rebuilt image (a new id under the same name) is seen within this many seconds.
IMAGE_CHECK_SECONDS = 5.0
_image_ids: dict[str, tuple[str, float]] = {}
HOSTNAME = "fastflow-run"
SHM_MB = 64  # as Docker's /dev/shm
MiB = 1024 * 1024
# On the host, before anything else: the first process joins the run's cgroup.
JOIN_CGROUP = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
# Inside the sandbox, still root (with only SETUP_CAPABILITIES): the tmpfs folders become
# the run user's, then setpriv leaves root for good (every capability dropped, from the
# bounding set too) and prepare.sh starts. Its arguments: the entry point, the folders.
BECOME_RUN_USER = (
    'entry="$1"; shift; chown {uid}:{uid} "$@" || exit 125; '
    "exec /usr/bin/setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all "
    "--ambient-caps=-all --bounding-set=-all --no-new-privs -- "
    f'sh {TOOLS_DIR}/prepare.sh "$entry"'
)
SETUP_CAPABILITIES = ("CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")


class SandboxExecutor:
    name = "sandbox"

    def check(self) -> None:
        problem = self.unavailable()
        if problem:
            raise EngineUnavailable(f"The sandbox executor cannot start runs here: {problem}")

    @staticmethod
    def unavailable() -> str:
        if _tool("bwrap") is None:
            return "bubblewrap is not installed (apt-get install bubblewrap)"
        return cgroups.available() or network.available()

    def check_image(self, image: str = "") -> str:
        """The id of the worker image a run would be unpacked from (the engine is asked;
        when it is away, the id of the one last unpacked here)."""
        image = image or settings.WORKER_IMAGE
        return rootfs.root_for(image, self._image_id(image)).image_id

    @staticmethod
    def _image_id(image: str) -> str | None:
        """The engine's id of `image`, asked at most every IMAGE_CHECK_SECONDS (a run
        starts in a few milliseconds; asking the engine each time would double that)."""
        known = _image_ids.get(image)
        if known and time.monotonic() - known[1] < IMAGE_CHECK_SECONDS:
            return known[0]
        try:
            image_id = DockerExecutor().check_image(image)
        except EngineUnavailable:
            return None
        _image_ids[image] = (image_id, time.monotonic())
        return image_id

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        self.check()
        image = spec.image or settings.WORKER_IMAGE
        root = rootfs.root_for(image, self._image_id(image))
        with_network = spec.purpose == "warm" or spec.network
        try:
            place, network_made = places.take(spec.run_id, with_network=with_network)
        except places.NoPlace as exc:
            raise ExecutorError("internal_error", f"The run could not be started: {exc}") from exc
        try:
            run_network = RunNetwork(place) if with_network else None
            cgroup = RunCgroup(places.cgroup_name(place))
            try:
                if run_network is not None and not network_made:
                    run_network.create()
                limits = spec.mem_hard_limit_bytes, spec.cpu_hard_limit, settings.RUN_PIDS_LIMIT
                cgroup.create(*limits)
            except (NetworkError, OSError) as exc:
                message = f"The run's sandbox could not be made: {exc}"
                raise ExecutorError("internal_error", message) from exc
            return self._run(spec, root, place, cgroup, run_network, log, watch)
        finally:
            places.release_soon(place)  # its processes, if any are left, are killed

    def _run(self, spec, root, place, cgroup: RunCgroup, run_network, log, watch) -> Outcome:
        seccomp_fd = seccomp.filter_fd()
        command = [
            "/bin/sh", "-c", JOIN_CGROUP, "fastflow-sandbox",
            *map(str, cgroup.procs_files), "--",
            *self._network_entry(run_network),
            *self._bubblewrap(spec, root, seccomp_fd, network=run_network is not None),
        ]  # fmt: skip
        outcome = Outcome(started_at=datetime.now(UTC))
        try:
            process = subprocess.Popen(  # noqa: S603 - built above, no user text but the env
                command,
                env=self._environment(spec, root),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(seccomp_fd,),
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorError("internal_error", f"The run could not be started: {exc}") from exc
        finally:
            os.close(seccomp_fd)
        watch.on_started(f"{HANDLE_PREFIX}{process.pid}:{place}")
        outcome = follow_process(
            process,
            spec,
            outcome,
            log,
            watch,
            sample=lambda: sample_every_second(process, outcome, watch, cgroup.usage),
            stop=lambda grace: _stop(process, cgroup, grace),
        )
        outcome.oom_killed = outcome.oom_killed or cgroup.oom_kills() > 0
        return outcome

    @staticmethod
    def _network_entry(run_network: RunNetwork | None) -> list[str]:
        if run_network is None:
            return []
        return [_tool("nsenter") or "nsenter", f"--net={run_network.path}", "--"]

    def _bubblewrap(self, spec: RunSpec, root: rootfs.Root, seccomp_fd: int, *, network: bool):
        warm = spec.purpose == "warm"
        tmpfs_bytes = settings.RUN_TMPFS_SIZE_MB * MiB
        arguments = [
            _tool("bwrap") or "bwrap",
            "--die-with-parent", "--new-session",
            "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            *([] if network else ["--unshare-net"]),
            "--hostname", HOSTNAME,
            "--ro-bind", str(root.path), "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--perms", "1777", "--size", str(SHM_MB * MiB), "--tmpfs", "/dev/shm",  # noqa: S108
            "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",  # noqa: S108
            "--perms", "0700", "--size", str(tmpfs_bytes), "--tmpfs", HOME,
            "--perms", "0700", "--size", str(WORK_TMPFS_MB * MiB), "--tmpfs", WORK_DIR,
            *_proc_as_docker_leaves_it(),
            "--ro-bind", str(spec.folder), CODE_DIR,
            "--ro-bind", str(shared_tools()), TOOLS_DIR,
            "--ro-bind", str(_etc_file("hosts", _hosts())), "/etc/hosts",
        ]  # fmt: skip
        owned = [HOME, WORK_DIR]
        shared_cache = Path(settings.UV_CACHE_DIR)
        prepare_shared_cache(shared_cache)
        if warm:
            # The one sandbox that writes the shared cache: no secrets, no pipeline code.
            arguments += ["--bind", str(shared_cache), CACHE_DIR]
        else:
            size = str(RUN_CACHE_TMPFS_MB * MiB)
            arguments += ["--perms", "0755", "--size", size, "--tmpfs", CACHE_DIR]
            for bucket in shared_buckets(shared_cache):
                arguments += ["--ro-bind", str(bucket), f"{CACHE_DIR}/{bucket.name}"]
            owned.append(CACHE_DIR)
        if network:
            resolv_conf = _etc_file("resolv.conf", _resolv_conf())
            arguments += ["--ro-bind", str(resolv_conf), "/etc/resolv.conf"]
        if run_ca_bundle():
            arguments += ["--ro-bind", settings.RUN_CA_BUNDLE, CA_PATH]
        if spec.data_dir is not None and not warm:
            ensure_data_folder(spec.data_dir, RUN_UID)
            arguments += ["--bind", str(spec.data_dir), DATA_MOUNT]
        arguments += [
            "--chdir", CODE_DIR,
            "--seccomp", str(seccomp_fd),
            "--cap-drop", "ALL",
            *(word for cap in SETUP_CAPABILITIES for word in ("--cap-add", cap)),
            "--",
            "/bin/sh", "-c",
            BECOME_RUN_USER.replace("{uid}", str(RUN_UID)),
            "become-run-user", spec.entry_point, *owned,
        ]  # fmt: skip
        return arguments

    @staticmethod
    def _environment(spec: RunSpec, root: rootfs.Root) -> dict[str, str]:
        """The run's variables: the image's, its own (secrets too), under what Fast-Flow
        sets, as a Docker run gets them."""
        variables = {
            **root.env,
            **spec.env,
            **layout_variables(warm=spec.purpose == "warm"),
            **prepare_environment(spec, f"{WORK_DIR}/env", f"{TOOLS_DIR}/launcher.py"),
        }
        if root.uv_version:
            variables["FASTFLOW_UV_VERSION"] = root.uv_version
        if spec.data_dir is not None and spec.purpose == "run":
            variables["FASTFLOW_DATA_DIR"] = DATA_MOUNT
        return variables

    def reattach(self, spec, handle, log, watch, resume_after) -> Outcome:
        """A sandbox dies with the worker that started it: there is nothing to follow."""
        places.sweep()
        raise ExecutorError(
            "lost",
            "Its worker stopped while it ran; a sandboxed run ends with its worker "
            "(the sandbox executor cannot re-attach), so it was lost.",
        )

    def find(self, run_id: str) -> str | None:
        """A sandbox is found through the handle recorded on the run."""
        return None

    def state(self, handle: str) -> str | None:
        pid = pid_of(handle, HANDLE_PREFIX)
        return "running" if pid and process_alive(pid) else "exited"

    def labelled_containers(self) -> dict[str, str]:
        """Nothing to hand over; what dead workers left (cgroups, namespaces) is swept."""
        places.sweep()
        return {}

    def remove(self, handle: str) -> None:
        """Nothing to do: a run's place is released as its follower ends, and what a dead
        worker left is swept by reconcile (`labelled_containers`), not after every run."""


def _stop(process: subprocess.Popen, cgroup: RunCgroup, grace_seconds: int) -> None:
    """SIGTERM to the run's processes (not bubblewrap itself, whose death kills them all at
    once), SIGKILL after the grace period; 0: kill now."""
    if grace_seconds:
        cgroup.signal(signal.SIGTERM, spare=process.pid)
        try:
            process.wait(timeout=grace_seconds)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)  # its pid namespace, and all in it, ends
    cgroup.signal(signal.SIGKILL)


# What Docker hides of /proc in a container (its masked paths) and keeps read-only; bwrap
# itself makes /proc/bus and /proc/irq read-only, and mounts no /sys at all.
DOCKER_MASKED_PROC = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
)  # fmt: skip
DOCKER_READ_ONLY_PROC = ("/proc/fs", "/proc/sys", "/proc/sysrq-trigger")


@cache
def _proc_as_docker_leaves_it() -> tuple[str, ...]:
    """bwrap arguments masking and protecting what the host's kernel has of those paths."""
    arguments: list[str] = []
    for path in DOCKER_MASKED_PROC:
        if Path(path).is_dir():
            arguments += ["--perms", "0555", "--size", "4096", "--tmpfs", path]
        elif Path(path).exists():
            arguments += ["--ro-bind", "/dev/null", path]
    for path in DOCKER_READ_ONLY_PROC:
        if Path(path).exists():
            arguments += ["--ro-bind", path, path]
    return tuple(arguments)


@cache
def _tool(name: str) -> str | None:
    """Where a program of the host is (asked once: every run starts a few of them)."""
    return shutil.which(name)


_written: dict[Path, str] = {}


def _etc_file(name: str, content: str) -> Path:
    """A file every sandbox mounts read-only, written when it changes."""
    folder = Path(settings.DATA_DIR) / "sandbox" / "etc"
    path = folder / name
    if _written.get(path) == content and path.is_file():
        return path
    _written[path] = content
    if not path.is_file() or path.read_text() != content:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{name}.{os.getpid()}"
        temporary.write_text(content)
        temporary.chmod(0o644)
        temporary.replace(path)
    return path


def _hosts() -> str:
    return f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{HOSTNAME}\n"


def _resolv_conf() -> str:
    """The host's resolver settings without loopback name servers, which a run's own
    loopback does not have (as Docker does)."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return ""
    kept = []
    for line in lines:
        words = line.split()
        loopback = len(words) > 1 and (words[1].startswith("127.") or words[1] == "::1")
        if words[:1] == ["nameserver"] and loopback:
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"
