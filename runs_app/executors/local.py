"""LocalExecutor: runs as subprocesses on this machine, with uv — for development and for
machines without Docker. Same contract as DockerExecutor, weaker isolation:

- the run sees this machine's file system and runs as the worker's own user;
- `mem_hard_limit` becomes an address-space rlimit of the pipeline's Python process (it
  raises MemoryError, reported as out of memory), `cpu_hard_limit` is not enforced;
- the run is its own process group: cancel sends SIGTERM, then SIGKILL after the grace
  period, a timeout SIGKILL, to the whole group;
- a run whose worker died cannot be re-attached (its output pipes died with the worker):
  it is stopped and recorded as lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path

from django.conf import settings
from uv import find_uv_bin

from runs_app.executors.base import (
    ExecutorError,
    MarkerReader,
    Outcome,
    RunSpec,
    Watch,
    ensure_data_folder,
    log_verdict,
    prepare_environment,
    record_sample,
    soft_limit_warnings,
    supervise,
)
from runs_app.in_run import LAUNCHER, PREPARE
from runs_app.logs import MAX_LINE_CHARS, STDERR, STDOUT, LogWriter, utc_timestamp

HANDLE_PREFIX = "local:"
# What a run inherits from the worker's environment; everything else comes from the run.
INHERITED = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "TMPDIR")


def local_uv_cache() -> Path:
    """A cache of its own: runs here write as the worker's user, container runs as uid
    1000, and neither may leave files in the shared cache that the other cannot open."""
    return Path(settings.UV_CACHE_DIR) / "local-executor"


@cache
def uv_binary() -> str:
    return find_uv_bin()


class LocalExecutor:
    name = "local"

    def check(self) -> None:
        """Nothing to reach: processes of this machine."""

    def check_image(self, image: str = "") -> str:
        """No image: runs are processes of this machine's Python."""
        return ""

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        cache = local_uv_cache()
        cache.mkdir(parents=True, exist_ok=True)
        env = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env.update(spec.env)
        env.update(
            PATH=os.pathsep.join([str(Path(uv_binary()).parent), os.environ.get("PATH", "")]),
            PYTHONUNBUFFERED="1",
            UV_CACHE_DIR=str(cache),
            UV_NO_PROGRESS="1",
            FASTFLOW_ROUTE_FILE=str(spec.run_dir / "route"),
            **prepare_environment(spec, str(spec.run_dir / "env"), str(LAUNCHER)),
        )
        if spec.data_dir is not None:
            ensure_data_folder(spec.data_dir)
            env["FASTFLOW_DATA_DIR"] = str(spec.data_dir)
        if spec.mem_hard_limit_bytes:
            env["FASTFLOW_MEMORY_RLIMIT"] = str(spec.mem_hard_limit_bytes)
        if settings.RUN_CA_BUNDLE and Path(settings.RUN_CA_BUNDLE).is_file():
            env.update(
                SSL_CERT_FILE=settings.RUN_CA_BUNDLE, REQUESTS_CA_BUNDLE=settings.RUN_CA_BUNDLE
            )
        if spec.cpu_hard_limit:
            log.system("cpu_hard_limit is not enforced by the local executor")
        if not spec.network:
            log.system('"network": false is not enforced by the local executor')
        command = ["sh", str(PREPARE), spec.entry_point]
        outcome = Outcome(started_at=datetime.now(UTC))
        try:
            process = subprocess.Popen(  # noqa: S603 - the command is built above, no shell
                command,
                cwd=spec.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise ExecutorError("internal_error", f"The run could not be started: {exc}") from exc
        watch.on_started(f"{HANDLE_PREFIX}{process.pid}")
        return follow_process(
            process,
            spec,
            outcome,
            log,
            watch,
            sample=lambda: sample_every_second(
                process, outcome, watch, partial(_session_usage, process.pid)
            ),
            stop=lambda grace: _stop_group(process, grace),
        )

    def reattach(self, spec, handle, log, watch, resume_after) -> Outcome:
        pid = pid_of(handle)
        if pid and process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        raise ExecutorError(
            "lost",
            "Its worker stopped while it ran; the local executor cannot re-attach to a "
            "process, so the run was stopped.",
        )

    def find(self, run_id: str) -> str | None:
        """A process is found through the handle recorded on the run, not by a label."""
        return None

    def state(self, handle: str) -> str | None:
        pid = pid_of(handle)
        return "running" if pid and process_alive(pid) else "exited"

    def labelled_containers(self) -> dict[str, str]:
        return {}

    def remove(self, handle: str) -> None:
        """Nothing to remove: a finished process leaves nothing behind."""


def follow_process(
    process: subprocess.Popen,
    spec: RunSpec,
    outcome: Outcome,
    log: LogWriter,
    watch: Watch,
    *,
    sample: Callable[[], None],
    stop: Callable[[int], None],
) -> Outcome:
    """Follow a started process to its end: its output lines (and markers) into the log,
    `sample()` in a thread of its own while it runs, the supervisor's checks (`stop(grace)`
    ends it), then its exit code and the verdicts (the sandbox executor's runs too)."""
    reader = MarkerReader(log, outcome, watch)
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, STDOUT, reader), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, STDERR, reader), daemon=True),
    ]
    for thread in readers:
        thread.start()
    threading.Thread(target=sample, daemon=True).start()

    def still_running(wait_seconds: float) -> bool:
        # A program that ends closes its pipes: that wakes the follower at once, where
        # waiting on the process alone is a poll (Popen.wait sleeps up to 50 ms).
        if _all_ended(readers, wait_seconds):
            try:
                process.wait(timeout=wait_seconds)
            except subprocess.TimeoutExpired:
                return True  # its pipes closed early: it goes on
            return False
        return process.poll() is None  # ended, with its pipes held by what it started

    supervise(spec, outcome, log, watch, still_running=still_running, stop=stop)
    for thread in readers:
        thread.join(timeout=5)
    log_verdict(outcome, log)
    code = process.returncode
    outcome.exit_code = 128 - code if code < 0 else code  # killed by signal N → 128+N
    outcome.finished_at = datetime.now(UTC)
    outcome.limit_warnings = soft_limit_warnings(
        spec, outcome.peak_cpu_percent, outcome.peak_memory_bytes
    )
    return outcome


def _all_ended(threads: list[threading.Thread], timeout: float) -> bool:
    """Wait up to `timeout` in all for the threads to end; whether they all did."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    return not any(thread.is_alive() for thread in threads)


def _pump(pipe, stream: str, reader: MarkerReader) -> None:
    """Lines of one pipe; a line without a newline is cut at MAX_LINE_CHARS (about: the
    limit counts bytes here), never held whole."""
    for raw in iter(lambda: pipe.readline(MAX_LINE_CHARS), b""):
        text = raw.decode("utf-8", errors="replace").rstrip("\n").rstrip("\r")
        reader.line(stream, text, utc_timestamp(), datetime.now(UTC))
    pipe.close()


def _stop_group(process: subprocess.Popen, grace_seconds: int) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM if grace_seconds else signal.SIGKILL)
        if grace_seconds:
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def sample_every_second(
    process: subprocess.Popen,
    outcome: Outcome,
    watch: Watch,
    usage: Callable[[], tuple[float | None, int | None]],
) -> None:
    """While the process runs, about once a second: its CPU (percent of one core, from the
    CPU seconds `usage()` counts) and memory (bytes) as a sample, and their peaks."""
    previous_cpu, previous_time = None, None
    while process.poll() is None:
        cpu, memory = usage()
        now = time.monotonic()
        percent = None
        if cpu is not None and previous_cpu is not None and now > previous_time:
            percent = (cpu - previous_cpu) / (now - previous_time) * 100
        previous_cpu, previous_time = cpu, now
        record_sample(outcome, watch, percent, memory)
        time.sleep(1)


def _session_usage(session: int) -> tuple[float, int | None]:
    """CPU seconds and resident memory of the processes of a session, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    rss, cpu = 0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) != session:  # session id
            continue
        cpu += int(fields[11]) + int(fields[12])
        rss += int(fields[21]) * page
    return cpu / ticks, rss or None


def pid_of(handle: str, prefix: str = HANDLE_PREFIX) -> int | None:
    """The process id a handle names: `<prefix><pid>`, perhaps followed by `:<more>`."""
    if not handle.startswith(prefix):
        return None
    pid = handle.removeprefix(prefix).split(":")[0]
    return int(pid) if pid.isdigit() else None


def process_alive(pid: int) -> bool:
    """Whether a process of this host runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
