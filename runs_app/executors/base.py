"""The contract every executor keeps, and the parts they share.

An executor starts a run from a `RunSpec` (plain data, no ORM), follows it until it ends —
writing every line to the run's log, checking for cancel and timeout, renewing the run's
lease and reporting resource peaks — and returns an `Outcome`. `runs_app.worker.execution` turns
the outcome into the run's final state. Executors never touch the database.

What an executor raises, and what the run then does:
- `ExecutorError`: the run cannot run at all (image missing, refused) → it fails with the
  error's reason;
- `EngineUnavailable`: the engine cannot be reached → the run is released (not failed), its
  container goes on, and a follower picks it up again when the engine is back;
- `LeaseLost`: another process follows the run now → this one stops at once, writing
  nothing more.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from django.conf import settings

from runs_app.in_run import fastflow_markers
from runs_app.logs import STDERR, SYSTEM, LogWriter

ROUTE_MAX_BYTES = 256


class ExecutorError(Exception):
    """A run could not be started; `reason` is a PipelineRun.FailureReason value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EngineUnavailable(ExecutorError):
    """The container engine cannot be reached (now): nothing is known about the run."""

    def __init__(self, message: str) -> None:
        super().__init__("internal_error", message)


class LeaseLost(Exception):
    """This process no longer follows the run; another one does (or will)."""


@dataclass
class RunSpec:
    run_id: str  # the public UUID (a warm-up's own id for warm-ups)
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
    run_dir: Path = Path()  # the local executor's per-run folder
    image: str = ""  # the worker image (PYTHON_IMAGES by python_version); "" = WORKER_IMAGE
    data_dir: Path | None = None  # pipeline.json data_folder: its persistent folder
    # "warm": install the requirements into the shared uv cache and stop (no user code).
    purpose: Literal["run", "warm"] = "run"
    # A run: the lock its warm-up made ("name==version" lines), installed exactly.
    lock: str = ""
    # A warm-up of a uv project: the extras and dependency groups it installs.
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    # A warm-up: credentials of private package indexes, as a netrc file (never for a run).
    netrc: str = ""
    # A warm-up: the indexes its requirements name ("--extra-index-url URL"), for its lock.
    index_options: tuple[str, ...] = ()
    # pipeline.json `placement` (label, value) pairs: the nodes a cluster may place it on.
    placement: tuple[tuple[str, str], ...] = ()
    # pipeline.json `network`: False gives the run no network at all (loopback only).
    network: bool = True


@dataclass
class Outcome:
    exit_code: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False
    log_overflow: bool = False  # printed more than LOG_MAX_SIZE_MB: stopped
    log_failure: str = ""  # the log could not be written (disk full): stopped
    started_at: datetime | None = None  # the container/process started
    finished_at: datetime | None = None  # ended, as the engine saw it
    user_code_started_at: datetime | None = None
    uv_version: str = ""
    route: str = ""
    peak_cpu_percent: float | None = None
    peak_memory_bytes: int | None = None
    limit_warnings: list[str] = field(default_factory=list)
    last_stderr: list[str] = field(default_factory=list)
    # Notebooks: per code cell {"cell", "status", "attempts", "seconds"}, by cell number.
    cells: dict[int, dict] = field(default_factory=dict)
    # Warm-ups: the installed distributions, "name==version" (the dependency audit).
    resolved: list[str] = field(default_factory=list)
    # The run said its code ended (`exit` marker): its end is near (the swarm executor).
    end_announced: bool = False


@dataclass
class Watch:
    """What the follower asks of its caller while a run goes on."""

    should_cancel: Callable[[], bool] = lambda: False
    # Renews the run's lease; False (or LeaseLost) when another process has the run.
    heartbeat: Callable[[], bool] = lambda: True
    on_started: Callable[[str], None] = lambda handle: None  # container id / pid, once known
    # A cluster has not placed the run yet: why, in its words ("" once it runs).
    on_waiting: Callable[[str], None] = lambda reason: None
    on_sample: Callable[[float | None, int | None], None] = lambda cpu, memory: None
    # True: stop following now, writing nothing more (the worker stops; LeaseLost).
    should_let_go: Callable[[], bool] = lambda: False
    # Models runs: a model's (seed's, test's) progress, and a piece of an artifact
    # (models_runner.py); both as the run said them, checked by whoever stores them.
    on_step: Callable[[dict], None] = lambda report: None
    on_artifact: Callable[[dict], None] = lambda piece: None


class Executor(Protocol):
    """What `runs_app.worker.execution` needs from an executor (Docker, local)."""

    name: str

    def check(self) -> None:
        """Raise EngineUnavailable when runs cannot be started or followed now."""

    def check_image(self, image: str = "") -> str:
        """The image a run would start from (its id), or ExecutorError (image_missing)."""

    def start(self, spec: RunSpec, log: LogWriter, watch: Watch) -> Outcome:
        """Start the run (or warm-up) and follow it to its end."""

    def reattach(
        self,
        spec: RunSpec,
        handle: str,
        log: LogWriter,
        watch: Watch,
        resume_after: dict[str, str],
    ) -> Outcome:
        """Follow a run started by a process that is gone, from where its log stops."""

    def find(self, run_id: str) -> str | None:
        """The handle of the run's container (or process), if one exists."""

    def state(self, handle: str) -> str | None:
        """'created', 'running', 'exited', ... or None when it does not exist."""

    def labelled_containers(self) -> dict[str, str]:
        """{run id: handle} of everything this executor started that still exists."""

    def remove(self, handle: str) -> None:
        """Remove what is left of a finished run (idempotent)."""


def record_sample(outcome: Outcome, watch: Watch, cpu: float | None, memory: int | None) -> None:
    """One resource sample (CPU in percent of one core, memory in bytes): peaks, live view."""
    if cpu is not None:
        outcome.peak_cpu_percent = max(outcome.peak_cpu_percent or 0.0, cpu)
    if memory:
        outcome.peak_memory_bytes = max(outcome.peak_memory_bytes or 0, memory)
    watch.on_sample(cpu, memory)


def prepare_environment(spec: RunSpec, env_dir: str, launcher: str) -> dict[str, str]:
    """The variables prepare.sh reads to build the run's environment and start it."""
    variables = {
        "FASTFLOW_ENV_DIR": env_dir,
        "FASTFLOW_LAUNCHER": launcher,
        "FASTFLOW_REQUIREMENTS": spec.requirements_file,
        "FASTFLOW_PYTHON": spec.python_version or "",
    }
    if spec.purpose == "warm":
        variables["FASTFLOW_WARM_ONLY"] = "1"
        variables["FASTFLOW_EXTRAS"] = " ".join(spec.extras)
        variables["FASTFLOW_GROUPS"] = " ".join(spec.groups)
        if spec.netrc:
            variables["FASTFLOW_NETRC"] = spec.netrc
        variables["FASTFLOW_INDEX_OPTIONS"] = "\n".join(spec.index_options)
        if spec.lock:  # a node's warm-up of a lock made elsewhere
            variables["FASTFLOW_LOCK"] = spec.lock
    elif spec.lock:
        variables["FASTFLOW_LOCK"] = spec.lock
    return variables


def ensure_data_folder(path: Path, owner_uid: int | None = None) -> None:
    """A pipeline's persistent data folder, made on its first run; in a container it is
    written by the run's user (`owner_uid`), which only a root orchestrator can arrange —
    otherwise the folder is opened to everyone on the host (it holds only that pipeline's
    own data, and DATA_DIR itself is not open)."""
    if path.is_dir():
        return
    path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    if owner_uid is None:
        return
    try:
        os.chown(path, owner_uid, owner_uid)
    except PermissionError:
        path.chmod(0o777)


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


class MarkerReader:
    """Splits a stream of output lines into log lines and Fast-Flow's own markers.

    The code inside the run speaks to the follower in markers on stderr (the protocol:
    runs_app/in_run/fastflow_markers.py). A marker whose text does not make sense is
    ordinary output. A pipeline could print a marker itself: that only changes its own
    record (its route, when its code started), never anything of another run.
    """

    def __init__(self, log: LogWriter, outcome: Outcome, watch: Watch | None = None) -> None:
        self.log = log
        self.outcome = outcome
        self.watch = watch or Watch()
        self.lock = threading.Lock()

    def line(self, stream: str, text: str, timestamp: str | None, moment: datetime) -> None:
        marker = fastflow_markers.parse(text) if stream == STDERR else None
        if marker and self.marker(*marker, moment):
            return
        if stream == STDERR:
            with self.lock:  # kept for the error message: masked like the log
                self.outcome.last_stderr = [*self.outcome.last_stderr[-19:], self.log.mask(text)]
        self.log.write(stream, text, timestamp)

    def marker(self, word: str, rest: str, moment: datetime) -> bool:
        """Act on a marker; False when its text does not make sense (then it is output)."""
        if word == "started":
            self.outcome.user_code_started_at = moment
        elif word == "handover":  # a pooled container got its run: the run starts now
            self.outcome.started_at = moment
        elif word == "uv":
            self.outcome.uv_version = rest.split(" (")[0].strip()[:40]
        elif word == "oom":
            self.outcome.oom_killed = True
        elif word == "route":
            try:
                route = json.loads(rest)
            except ValueError:
                return False
            if not isinstance(route, str):
                return False
            self.outcome.route = route[:ROUTE_MAX_BYTES]
        elif word == "note":
            self.log.write(SYSTEM, rest)
        elif word == "resolved":
            try:
                resolved = json.loads(rest)
            except ValueError:
                return False
            if not isinstance(resolved, list):
                return False
            self.outcome.resolved = [str(item)[:200] for item in resolved[:2000]]
        elif word == "cell":
            return self.cell(rest)
        elif word == "sample":
            return self.sample(rest)
        elif word == "exit":
            self.outcome.end_announced = True
        elif word in ("step", "artifact"):
            try:
                report = json.loads(rest)
            except ValueError:
                return False
            if not isinstance(report, dict):
                return False
            (self.watch.on_step if word == "step" else self.watch.on_artifact)(report)
        else:
            return False
        return True

    def sample(self, message: str) -> bool:
        """CPU and memory the run measured itself (swarm_boot.py: the manager has no stats)."""
        try:
            report = json.loads(message)
            cpu, memory = report.get("cpu"), report.get("memory")
            cpu = None if cpu is None else max(float(cpu), 0.0)
            memory = None if memory is None else max(int(memory), 0)
        except (ValueError, TypeError, AttributeError):
            return False
        record_sample(self.outcome, self.watch, cpu, memory)
        return True

    def cell(self, message: str) -> bool:
        """A notebook cell's progress: a line in the log, and the cell's summary."""
        try:
            report = json.loads(message)
            number, total = int(report["cell"]), int(report["of"])
            attempt, attempts = int(report["attempt"]), int(report["attempts"])
            event = str(report["event"])
            seconds = float(report.get("seconds", 0))
        except (ValueError, KeyError, TypeError):
            return False
        name = f"cell {number}/{total}"
        tries = f" (attempt {attempt} of {attempts})" if attempts > 1 else ""
        summary = self.outcome.cells.setdefault(
            number, {"cell": number, "status": "running", "attempts": 0, "seconds": 0.0}
        )
        if event == "start":
            summary.update(status="running", attempts=attempt)
            self.log.write(SYSTEM, f"{name} starts{tries}")
        elif event == "retry":
            summary["seconds"] += seconds
            delay = float(report.get("delay", 0))
            self.log.write(
                SYSTEM, f"{name} failed{tries}; again in {delay:g} s, in the same namespace"
            )
        elif event in ("ok", "failed"):
            summary["seconds"] += seconds
            summary["status"] = "succeeded" if event == "ok" else "failed"
            self.log.write(SYSTEM, f"{name} {summary['status']}{tries} in {seconds:.2f} s")
        else:
            return False
        return True


def log_verdict(outcome: Outcome, log: LogWriter) -> None:
    """Once every line is read: a run that ended before its flood was read, or whose log
    stopped being writable at the very end, is judged by its log all the same."""
    outcome.log_overflow = outcome.log_overflow or log.overflowed
    if log.failure is not None and not outcome.log_failure:
        outcome.log_failure = f"{log.failure.strerror or log.failure}"


def supervise(
    spec: RunSpec,
    outcome: Outcome,
    log: LogWriter,
    watch: Watch,
    *,
    still_running: Callable[[float], bool],
    stop: Callable[[int], None],
) -> None:
    """Until the run ends: lease renewal, cancel requests (graceful stop), the timeout and the
    log's own limits (kill).

    `still_running(wait_seconds)` waits up to that long and says whether the run goes on;
    `stop(grace_seconds)` stops it (0 = kill now). The timeout counts from the run's own
    start, so a re-attached follower keeps the original deadline.
    """
    started = outcome.started_at or datetime.now(UTC)
    deadline = started + timedelta(seconds=spec.timeout_seconds) if spec.timeout_seconds else None
    last_beat = last_cancel_check = time.monotonic()
    while still_running(0.2):
        if watch.should_let_go():
            raise LeaseLost
        now = time.monotonic()
        if now - last_beat >= heartbeat_every():
            if not watch.heartbeat():
                raise LeaseLost
            last_beat = now
        if not outcome.cancelled and now - last_cancel_check >= 0.5:
            last_cancel_check = now
            if watch.should_cancel():
                outcome.cancelled = True
                log.system("cancel requested: stopping the run")
                stop(settings.RUN_STOP_GRACE_SECONDS)
        if deadline and not outcome.timed_out and datetime.now(UTC) >= deadline:
            outcome.timed_out = True
            log.system(f"timeout of {spec.timeout_seconds} s reached: killing the run")
            stop(0)
        if log.overflowed and not outcome.log_overflow:
            outcome.log_overflow = True
            stop(0)
        if log.failure is not None and not outcome.log_failure:
            outcome.log_failure = f"{log.failure.strerror or log.failure}"
            stop(0)


def heartbeat_every() -> float:
    """How often a follower renews its lease: six times within RUN_HEARTBEAT_TIMEOUT (every
    5 s by default), so a late beat or two never lets the lease lapse."""
    return settings.RUN_HEARTBEAT_TIMEOUT / 6
