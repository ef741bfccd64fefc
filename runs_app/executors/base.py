"""The contract every executor keeps, and the parts they share.

An executor starts a run from a `RunSpec` (plain data, no ORM), follows it until it ends —
writing every line to the run's log, checking for cancel and timeout, reporting heartbeats
and resource peaks — and returns an `Outcome`. `runs_app.execution` turns the outcome into
the run's final state. Executors never touch the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings

from runs_app.logs import STDERR, SYSTEM, LogWriter

LAUNCHER = Path(__file__).with_name("launcher.py")
MARK = "\x1efastflow:"


class ExecutorError(Exception):
    """A run could not be started; `reason` is a PipelineRun.FailureReason value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class RunSpec:
    run_id: str  # the public UUID
    pipeline: str
    folder: Path
    entry_point: str  # main.py | main.ipynb
    requirements_file: str  # "" when none
    python_version: str | None
    env: dict[str, str]
    cpu_hard_limit: float | None = None
    mem_hard_limit_bytes: int | None = None
    cpu_soft_limit: float | None = None
    mem_soft_limit_bytes: int | None = None
    timeout_seconds: int | None = None  # None = no limit
    run_dir: Path = Path()  # writable per-run folder (route file)


@dataclass
class Outcome:
    exit_code: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False
    started_at: datetime | None = None  # the container/process started
    user_code_started_at: datetime | None = None
    uv_version: str = ""
    peak_cpu_percent: float | None = None
    peak_memory_bytes: int | None = None
    limit_warnings: list[str] = field(default_factory=list)
    last_stderr: list[str] = field(default_factory=list)


@dataclass
class Watch:
    """What the follower asks of its caller while a run goes on."""

    should_cancel: Callable[[], bool] = lambda: False
    heartbeat: Callable[[], None] = lambda: None
    on_started: Callable[[str], None] = lambda handle: None  # container id / pid, once known
    on_sample: Callable[[float | None, int | None], None] = lambda cpu, memory: None


def record_sample(outcome: Outcome, watch: Watch, cpu: float | None, memory: int | None) -> None:
    """One resource sample (CPU in percent of one core, memory in bytes): peaks, live view."""
    if cpu is not None:
        outcome.peak_cpu_percent = max(outcome.peak_cpu_percent or 0.0, cpu)
    if memory:
        outcome.peak_memory_bytes = max(outcome.peak_memory_bytes or 0, memory)
    watch.on_sample(cpu, memory)


def uv_command(spec: RunSpec, launcher_path: str) -> list[str]:
    """`uv run` for the run's environment, then the launcher, then the entry point."""
    command = ["uv", "run", "--no-project"]
    command += ["--python", spec.python_version or "python3"]
    if spec.requirements_file:
        command += ["--with-requirements", spec.requirements_file]
    return [*command, "python", "-u", launcher_path, spec.entry_point]


class MarkerReader:
    """Splits a stream of output lines into log lines and Fast-Flow's own markers."""

    def __init__(self, log: LogWriter, outcome: Outcome) -> None:
        self.log = log
        self.outcome = outcome
        self.lock = threading.Lock()

    def line(self, stream: str, text: str, timestamp: str | None, moment: datetime) -> None:
        if stream == STDERR and text.startswith(MARK):
            self.marker(text[len(MARK) :], moment)
            return
        if stream == STDERR:
            with self.lock:
                self.outcome.last_stderr = [*self.outcome.last_stderr[-19:], text]
        self.log.write(stream, text, timestamp)

    def marker(self, message: str, moment: datetime) -> None:
        if message == "started":
            self.outcome.user_code_started_at = moment
        elif message.startswith("uv "):
            self.outcome.uv_version = message.removeprefix("uv ").split(" (")[0].strip()
        elif message == "oom":
            self.outcome.oom_killed = True
        else:
            self.log.write(SYSTEM, message)


def soft_limit_warnings(
    spec: RunSpec, peak_cpu_percent: float | None, peak_memory_bytes: int | None
) -> list[str]:
    warnings = []
    cpu_soft, mem_soft = spec.cpu_soft_limit, spec.mem_soft_limit_bytes
    if cpu_soft and peak_cpu_percent is not None and peak_cpu_percent > cpu_soft * 100:
        warnings.append(
            f"CPU peaked at {peak_cpu_percent / 100:.2f} cores, above the soft limit of "
            f"{cpu_soft:g}"
        )
    if mem_soft and peak_memory_bytes is not None and peak_memory_bytes > mem_soft:
        warnings.append(
            f"memory peaked at {peak_memory_bytes / 1024**2:.0f} MiB, above the soft limit "
            f"of {mem_soft / 1024**2:.0f} MiB"
        )
    return warnings


def supervise(
    spec: RunSpec,
    outcome: Outcome,
    log: LogWriter,
    watch: Watch,
    *,
    still_running: Callable[[float], bool],
    stop: Callable[[int], None],
) -> None:
    """Until the run ends: heartbeats, cancel requests (graceful stop), the timeout (kill).

    `still_running(wait_seconds)` waits up to that long and says whether the run goes on;
    `stop(grace_seconds)` stops it (0 = kill now). The timeout counts from the run's own
    start, so a re-attached follower keeps the original deadline.
    """
    started = outcome.started_at or datetime.now(UTC)
    deadline = started + timedelta(seconds=spec.timeout_seconds) if spec.timeout_seconds else None
    last_beat = last_cancel_check = 0.0
    while still_running(0.2):
        now = time.monotonic()
        if now - last_beat >= 5:
            watch.heartbeat()
            last_beat = now
        if not outcome.cancelled and now - last_cancel_check >= 0.5:
            last_cancel_check = now
            if watch.should_cancel():
                outcome.cancelled = True
                log.write(SYSTEM, "cancel requested: stopping the run")
                stop(settings.RUN_STOP_GRACE_SECONDS)
        if deadline and not outcome.timed_out and datetime.now(UTC) >= deadline:
            outcome.timed_out = True
            log.write(SYSTEM, f"timeout of {spec.timeout_seconds} s reached: killing the run")
            stop(0)
