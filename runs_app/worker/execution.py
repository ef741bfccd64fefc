"""A run's life in the worker: take it, follow it, record the truth, hand it on.

A worker's supervisor (runs_app.worker.supervisor) takes claimed runs and follows each with
`follow_run` in a thread of its own; `execute_run` does both in the caller's thread (tests,
and a task an older version queued). `PipelineRun.take` makes exactly one follower of a
run, whoever asks. A follower finds the run's container when there is one (a predecessor
died, or the engine went away) and re-attaches to it instead of starting another.

The follower holds the run's lease (PipelineRun.worker_id) and renews it every few
seconds. When the database cannot be reached it keeps following for half of
RUN_HEARTBEAT_TIMEOUT — its lines wait in the spool, nothing is lost — and then stops without
writing more, because by then reconcile may have handed the run to another worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tarfile
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Q
from django.utils import timezone

from pipelines_app.sizes import format_size
from runs_app import live
from runs_app.artifacts import ArtifactWriter
from runs_app.environment import build_environment
from runs_app.executors import (
    EngineUnavailable,
    Executor,
    ExecutorError,
    LeaseLost,
    Outcome,
    RunSpec,
    Watch,
    get_executor,
)
from runs_app.executors.local import process_alive
from runs_app.logs import LogWriter, MetricsWriter, ship_leftover_spools, spool_path
from runs_app.models import EnvironmentLock, PipelineRun, dispatch
from runs_app.steps import StepRecorder, failure_summary
from runs_app.stored_logs import last_timestamps
from runs_app.worker.code import code_folder
from runs_app.worker.warming import ensure_warm
from secrets_app.crypto import DecryptionError
from secrets_app.masking import Masker

logger = logging.getLogger(__name__)

# A scheduled run that leaves the queue later than this says so in its log.
LATE_AFTER = timedelta(seconds=5)
# A claimed run whose task was handed out this long ago without being taken is sent again.
LOST_TASK_AFTER = timedelta(seconds=30)
FINISHED_PREFIX = "finished: "
FailureReason = PipelineRun.FailureReason
Status = PipelineRun.Status
T = TypeVar("T")


# Told apart from a later process that happens to get the same pid (a restarted container
# hands out the same small pids again): a token fresh for every start of the worker.
WORKER_TOKEN = uuid.uuid4().hex[:8]


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{WORKER_TOKEN}"


def execute_run(run_id: int) -> None:
    """Take one run and follow it to its end (or do nothing if another follower has it)."""
    run = PipelineRun.take(run_id, worker_id())
    if run is not None:
        follow_run(run)


def follow_run(run: PipelineRun, lets_go: Callable[[], bool] = lambda: False) -> None:
    """Follow a run this process took to its end — or until `lets_go()` says to stop
    following (the worker stops): then it writes nothing more, and the run waits for the
    next follower."""
    try:
        RunFollower(run, lets_go).follow()
    finally:
        try:
            dispatch()  # a slot is free (or the run could not start): start the next
        except DatabaseError:
            logger.warning("could not start the next run: the database is unavailable")


class Lease:
    """The run's lease as this process sees it.

    `renew()` is the heartbeat: False once another process holds the run. A heartbeat the
    database cannot take is tolerated for half of RUN_HEARTBEAT_TIMEOUT (reconcile hands
    a run over only after the whole timeout), then LeaseLost stops the follower.
    """

    def __init__(self, run: PipelineRun) -> None:
        self.run = run
        self.confirmed_at = time.monotonic()

    @property
    def safe_for(self) -> float:
        return settings.RUN_HEARTBEAT_TIMEOUT / 2 - (time.monotonic() - self.confirmed_at)

    def renew(self) -> bool:
        try:
            # The follower's turn: a connection an outage ended is replaced here, before
            # the beat (runs_app.worker.loops).
            close_old_connections()
            held = self.run.beat()
        except DatabaseError:
            close_old_connections()
            if self.safe_for > 0:
                return True
            raise LeaseLost from None
        if held:
            self.confirmed_at = time.monotonic()
        return held

    def ensure(self) -> None:
        """Before acting for the run (its last lines, its end): the lease is surely ours."""
        if self.safe_for <= 0 and not self.renew():
            raise LeaseLost


def with_database(action: Callable[[], T], lease: Lease) -> T:
    """Run a database write, retrying while the lease is safe (a SQLite lock held too long,
    PostgreSQL restarting); LeaseLost when the database stays away longer."""
    delay = 0.2
    while True:
        try:
            return action()
        except DatabaseError:
            close_old_connections()
            if lease.safe_for <= delay:
                raise LeaseLost from None
            logger.warning("the database is unavailable; trying again in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class RunFollower:
    """Everything a worker does for one run it holds (in a thread of its own)."""

    def __init__(self, run: PipelineRun, lets_go: Callable[[], bool] = lambda: False) -> None:
        self.run = run
        self.lets_go = lets_go
        self.lease = Lease(run)
        # The executor that started it (a follower taking over), else the pipeline's.
        name, self.not_allowed = (run.executor, "") if run.executor else run.pipeline.executor
        self.executor: Executor = get_executor(name)
        self.log: LogWriter | None = None
        self.metrics: MetricsWriter | None = None
        self.spec: RunSpec | None = None
        self.steps: StepRecorder | None = None  # models runs
        self.artifacts: ArtifactWriter | None = None

    def follow(self) -> None:
        run = self.run
        try:
            environment = build_environment(run)
        except DecryptionError as exc:
            self._fail_before_start(FailureReason.SECRET, str(exc))
            return
        except DatabaseError:
            logger.warning("run %s: the database is unavailable; left to a worker", run)
            return  # the lease lapses; reconcile hands the run out again
        mask = Masker(environment.secret_values)
        try:
            self.log = LogWriter(
                spool_path(run.public_id), mask=mask, publish_as=run.public_id, run_id=run.pk
            )
            self.metrics = MetricsWriter(run.pk, publish_as=run.public_id)
        except OSError as exc:
            self._fail_without_log(exc)
            return
        except DatabaseError:
            logger.warning("run %s: the database is unavailable; left to a worker", run)
            return
        try:
            self.spec, notes = run_spec(run, environment.variables)
        except DatabaseError:
            logger.warning("run %s: the database is unavailable; left to a worker", run)
            self.log.close()
            self.metrics.close()
            return
        except (OSError, tarfile.TarError, zlib.error) as exc:
            self._fail_before_start(
                FailureReason.INTERNAL_ERROR, f"its code bundle could not be unpacked here: {exc}"
            )
            return
        if run.pipeline.spec.type == "models":
            self.steps = StepRecorder(run, mask)
            self.artifacts = ArtifactWriter(run, self.log)
        try:
            self._follow(environment, notes, mask)
        finally:
            if self.steps is not None:
                self.steps.close()
            self.log.close()
            self.metrics.close()
            if run.is_finished:
                shutil.rmtree(self.spec.run_dir, ignore_errors=True)
            # Only now, with the last line written: viewers close when they see a final
            # status (or the run waiting for a worker again).
            live.status_changed(run.public_id)

    def _follow(self, environment, notes: list[str], mask: Masker) -> None:
        run, log, spec = self.run, self.log, self.spec
        watch = Watch(
            should_cancel=self._cancel_requested,
            heartbeat=self.lease.renew,
            should_let_go=self.lets_go,
            on_started=lambda handle: with_database(lambda: run.mark_started(handle), self.lease),
            on_waiting=lambda reason: with_database(
                lambda: run.record(cluster_waiting=reason[:500]), self.lease
            ),
            on_sample=self.metrics.sample,
            on_step=self.steps.report if self.steps else lambda report: None,
            on_artifact=self.artifacts.write if self.artifacts else lambda piece: None,
        )
        try:
            try:
                handle, state = self._existing_container()
                if handle:
                    log.system(f"worker {worker_id()} re-attached to the run ({state})")
                    resume = with_database(lambda: last_timestamps(run.pk), self.lease)
                    outcome = self.executor.reattach(spec, handle, log, watch, resume)
                else:
                    outcome = self._start(environment, notes, watch)
                if outcome is not None:
                    self._record(outcome, mask)
            except EngineUnavailable as exc:
                if self.lease.safe_for > 0:
                    log.system(f"{exc}; the run waits for it (a started container goes on)")
                with_database(run.release, self.lease)
            except ExecutorError as exc:  # it cannot run (or its container vanished: lost)
                self._conclude(Status.FAILED, exc.reason, str(exc))
            except (LeaseLost, DatabaseError):
                raise
            except Exception as exc:
                logger.exception("run %s failed inside Fast-Flow", run.public_id)
                message = mask(f"Fast-Flow failed while running it: {type(exc).__name__}: {exc}")
                self._conclude(Status.FAILED, FailureReason.INTERNAL_ERROR, message)
        except LeaseLost:
            logger.warning("run %s: its lease could not be kept; another worker goes on", run)
            return
        except DatabaseError:
            logger.warning("run %s: the database is unavailable; left to another worker", run)
            return
        if run.is_finished and run.container_id:
            # Only now: exit code and log are stored. (Without the engine, reconcile removes
            # containers of final runs later.)
            with contextlib.suppress(EngineUnavailable):
                self.executor.remove(run.container_id)

    def _existing_container(self) -> tuple[str, str]:
        """The run's container from an earlier follower, if it got that far, and its state
        (else "", "")."""
        run = self.run
        handle = run.container_id or self.executor.find(str(run.public_id)) or ""
        if not handle:
            return "", ""
        state = self.executor.state(handle)
        if state == "created":
            # Its follower stopped between creating and starting it: start afresh.
            self.executor.remove(handle)
            return "", ""
        if state is None:
            raise ExecutorError(
                FailureReason.LOST, "Its container vanished while no worker was following it."
            )
        if handle != run.container_id:
            with_database(lambda: run.record(container_id=handle), self.lease)
        return handle, state

    def _start(self, environment, notes: list[str], watch: Watch) -> Outcome | None:
        run, log, spec = self.run, self.log, self.spec
        if self.not_allowed:
            self._conclude(Status.FAILED, FailureReason.NOT_ALLOWED, self.not_allowed)
            return None
        with_database(
            lambda: run.record(
                environment=environment.visible,
                secret_env_names=sorted(environment.secret_names),
                executor=self.executor.name,
            ),
            self.lease,
        )
        if run.lateness is not None and run.lateness > LATE_AFTER:
            log.system(
                f"scheduled for {run.scheduled_for.isoformat()}, "
                f"started {format_delay(run.lateness)} late"
            )
        log.system(
            f"starting {run.pipeline.name} (attempt {run.attempt}) on worker node "
            f"{settings.WORKER_NAME} with the {self.executor.name} executor"
        )
        for note in notes:
            log.system(note)
        if run.pipeline.needs_environment:
            problem = ensure_warm(run.pipeline, self.executor, log, watch)
            if problem:
                message = f"its requirements could not be installed:\n{problem}"
                self._conclude(Status.FAILED, FailureReason.DEPENDENCY_INSTALL, message)
                return None
            # Exactly what its warm-up installed, never resolved again; recorded on the run.
            lock = EnvironmentLock.current(run.pipeline)
            if lock is not None:
                spec.lock = lock.text if lock.packages else ""
                with_database(lambda: run.record(environment_lock=lock), self.lease)
                log.system(f"environment: {len(lock.packages)} package(s), lock {lock.short_hash}")
        return self.executor.start(spec, log, watch)

    def _cancel_requested(self) -> bool:
        try:
            return self.run.cancel_is_requested()
        except DatabaseError:
            close_old_connections()
            return False  # asked again in half a second

    def _record(self, outcome: Outcome, mask: Masker) -> None:
        """Turn what the executor saw into the run's final, truthful state."""
        # A run that ends before the follower's next look at its log still went past the
        # log's limits: they decide its end (seen under load: 4 MiB printed at once).
        if self.log.overflowed:
            outcome.log_overflow = True
        if self.log.failure is not None and not outcome.log_failure:
            outcome.log_failure = f"{self.log.failure.strerror or self.log.failure}"
        status, reason, message = judge(outcome, self.spec)
        if self.steps is not None:
            self.steps.close()  # every reported step stored before the run is judged
            with_database(self.steps.conclude, self.lease)
            if reason == FailureReason.EXIT_CODE:
                failed = with_database(lambda: failure_summary(self.run), self.lease)
                if failed:
                    reason, message = FailureReason.STEP_FAILED, f"{message}: {failed}"
        message = mask(message)
        fields = {
            "exit_code": outcome.exit_code,
            "uv_version": outcome.uv_version,
            "peak_cpu_percent": outcome.peak_cpu_percent,
            "peak_memory_bytes": outcome.peak_memory_bytes,
            "limit_warnings": outcome.limit_warnings,
            "route": mask(outcome.route),
            "cells": [outcome.cells[number] for number in sorted(outcome.cells)],
        }
        if outcome.finished_at:
            fields["finished_at"] = outcome.finished_at  # the engine's, not when we noticed
        if outcome.started_at and outcome.user_code_started_at:
            fields["setup_duration"] = max(
                outcome.user_code_started_at - outcome.started_at, timedelta(0)
            )
        self._conclude(status, reason, message, **fields)

    def _conclude(self, status: str, reason: str, message: str, **fields) -> None:
        """Tell the run's end in its log (once), then store it."""
        run, log = self.run, self.log
        self.lease.ensure()
        if not log.last_system.startswith(FINISHED_PREFIX):
            # (A predecessor that told the end but could not store it already said it.)
            for warning in fields.get("limit_warnings", ()):
                log.system(f"warning: {warning}")
            label = Status(status).label
            log.system(f"{FINISHED_PREFIX}{label}" + (f" — {message}" if message else ""))
            delay = run.retry_due_in(status, reason)
            if delay is not None:
                log.system(
                    f"retry {run.attempt} of {run.attempts_allowed} will be queued, "
                    f"due in {delay:g} s"
                )
        self._finish(status, failure_reason=reason, error_message=message, **fields)

    def _finish(self, status: str, **fields) -> None:
        self.lease.ensure()
        if self.log is not None:
            # Every line stored before the run is final: viewers stop at a final status.
            with_database(self.log.ship, self.lease)
        with_database(lambda: self.run.finish(status, **fields), self.lease)

    def _fail_without_log(self, problem: OSError) -> None:
        """The log cannot even be opened (disk full, LOGS_DIR gone): the run fails, and its
        container, if it has one, is stopped."""
        message = f"its log could not be written: {problem.strerror or problem}"
        try:
            self._finish(
                Status.FAILED, failure_reason=FailureReason.LOG_UNWRITABLE, error_message=message
            )
            if self.run.is_finished and self.run.container_id:
                self.executor.remove(self.run.container_id)
        except (LeaseLost, DatabaseError, EngineUnavailable):
            logger.warning("run %s: %s; could not be ended now", self.run, message)
        live.status_changed(self.run.public_id)

    def _fail_before_start(self, reason: str, message: str) -> None:
        """End a run that cannot start at all (a secret that does not decrypt, its code
        that cannot be had on this node)."""
        try:
            if self.log is None:
                self.log = LogWriter(
                    spool_path(self.run.public_id),
                    publish_as=self.run.public_id,
                    run_id=self.run.pk,
                )
            self._conclude(Status.FAILED, reason, f"cannot start: {message}")
        except (LeaseLost, DatabaseError):
            logger.warning("run %s: could not be ended now; another worker will", self.run)
        finally:
            if self.log is not None:
                self.log.close()
            if self.metrics is not None:
                self.metrics.close()
            live.status_changed(self.run.public_id)


def judge(outcome: Outcome, spec: RunSpec) -> tuple[str, str, str]:
    """(status, failure reason, message) of a run from what its executor saw."""
    if outcome.cancelled:
        return Status.CANCELLED, "", "cancelled on request"
    if outcome.log_failure:
        return (
            Status.FAILED,
            FailureReason.LOG_UNWRITABLE,
            f"its log could not be written ({outcome.log_failure}); it was stopped",
        )
    if outcome.log_overflow:
        return (
            Status.FAILED,
            FailureReason.LOG_LIMIT,
            f"it printed more than LOG_MAX_SIZE_MB ({settings.LOG_MAX_SIZE_MB} MB) of output; "
            "it was stopped (the log keeps the first part)",
        )
    if outcome.timed_out:
        return Status.TIMED_OUT, "", f"killed after its timeout of {spec.timeout_seconds} s"
    if killed_for_memory(outcome, spec):
        limit = spec.mem_hard_limit_bytes
        message = "out of memory: killed for using more than its memory limit" + (
            f" ({format_size(limit)})" if limit else ""
        )
        return Status.FAILED, FailureReason.OUT_OF_MEMORY, message
    if outcome.exit_code == 0:
        return Status.SUCCEEDED, "", ""
    if outcome.user_code_started_at is None:
        detail = "\n".join(outcome.last_stderr[-8:]).strip()
        message = "uv could not prepare the run's environment" + (f":\n{detail}" if detail else "")
        return Status.FAILED, FailureReason.DEPENDENCY_INSTALL, message
    return Status.FAILED, FailureReason.EXIT_CODE, exit_message(outcome)


def killed_for_memory(outcome: Outcome, spec: RunSpec) -> bool:
    """The engine says so; or, as its OOM flag can lose the race with the exit (Docker on
    cgroup v2, under load), a SIGKILL that Fast-Flow did not send (cancel and timeout are
    judged before) to a run with a memory limit, not last seen far below that limit."""
    if outcome.oom_killed:
        return True
    limit = spec.mem_hard_limit_bytes
    if outcome.exit_code != 128 + 9 or not limit:
        return False
    return outcome.peak_memory_bytes is None or outcome.peak_memory_bytes >= limit // 2


# What a pipeline's last words on stderr say about the limit it ran into.
LIMIT_HINTS = (
    (
        ("No space left on device",),
        "its writable space is full (/tmp and its home are {tmpfs} MiB each: RUN_TMPFS_SIZE_MB)",
    ),
    (
        ("Resource temporarily unavailable", "can't start new thread", "BlockingIOError"),
        "it may have reached its limit of {pids} processes and threads (RUN_PIDS_LIMIT)",
    ),
)


def exit_message(outcome: Outcome) -> str:
    message = f"exited with code {outcome.exit_code}"
    last_words = "\n".join(outcome.last_stderr[-8:])
    for needles, hint in LIMIT_HINTS:
        if any(needle in last_words for needle in needles):
            hint_text = hint.format(tmpfs=settings.RUN_TMPFS_SIZE_MB, pids=settings.RUN_PIDS_LIMIT)
            return f"{message}: {hint_text}"
    return message


def format_delay(delay: timedelta) -> str:
    seconds = delay.total_seconds()
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def run_spec(run: PipelineRun, environment: dict[str, str]) -> tuple[RunSpec, list[str]]:
    """What the executor needs, with the run's effective limits (runs_app.limits: stored on
    it when it was made); and notes for the log about limits pipeline.json asked for above
    the instance's."""
    config = run.pipeline.spec
    limits = run.effective_limits
    spec = RunSpec(
        run_id=str(run.public_id),
        pipeline=run.pipeline.name,
        # Its bundle: the folder's content when it was queued, from the database (a run
        # queued before bundles existed: the folder, resolved once).
        folder=(
            code_folder(run.bundle_id)
            if run.bundle_id is not None
            else Path(run.pipeline.folder_path).resolve()
        ),
        entry_point=config.entry_point,
        requirements_file=run.pipeline.requirements_file,
        python_version=config.python_version,
        image=run.pipeline.worker_image,
        data_dir=run.pipeline.data_folder,
        placement=tuple(config.placement),
        network=config.network,
        env=environment,
        cpu_hard_limit=limits.cpu_hard,
        mem_hard_limit_bytes=limits.mem_hard_bytes,
        cpu_soft_limit=limits.cpu_soft,
        mem_soft_limit_bytes=limits.mem_soft_bytes,
        timeout_seconds=limits.timeout_seconds,
        run_dir=Path(settings.DATA_DIR) / "runs" / str(run.public_id),
    )
    return spec, list(limits.notes)


# --- the worker's housekeeping -------------------------------------------------------------


def reconcile(executor: Executor | None = None, *, startup: bool = False) -> dict[str, int]:
    """Make every run in flight followed by a live worker, and leave no stray container.

    - runs whose follower stopped renewing its lease (or, at start-up, died with a process
      of this host) are released: they wait for a follower again;
    - runs waiting for a follower whose task was never taken are handed out again — only
      while the engine answers (else they wait for it);
    - containers of runs that are already final are removed (of every executor this
      instance lets pipelines choose too; the sandbox's: what dead workers left, swept);
    - log spools no writer holds any more are stored and removed.
    """
    executor = executor or get_executor()
    counts = {"released": 0, "resent": 0, "removed": 0}
    counts["spools"] = ship_leftover_spools()
    dead = dead_local_workers() if startup else []
    counts["released"] = len(PipelineRun.release_stale(dead))
    try:
        executor.check()
    except EngineUnavailable:
        return counts
    lost_since = timezone.now() - LOST_TASK_AFTER
    waiting = PipelineRun.objects.filter(status=Status.CLAIMED).filter(
        Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=lost_since)
    )
    resend = list(waiting.values_list("pk", flat=True))
    PipelineRun.hand_to_workers(resend)
    counts["resent"] = len(resend)
    # Pipelines may choose another executor (PIPELINE_EXECUTORS): what it left goes too.
    chosen = [name for name in settings.PIPELINE_EXECUTORS if name != settings.FASTFLOW_EXECUTOR]
    for each in [executor, *(get_executor(name) for name in chosen)]:
        try:
            containers = each.labelled_containers()
            final = PipelineRun.objects.filter(
                public_id__in=list(containers), status__in=PipelineRun.FINAL_STATUSES
            ).values_list("public_id", flat=True)
            for public_id in final:
                each.remove(containers[str(public_id)])
                counts["removed"] += 1
        except EngineUnavailable:
            pass
    return counts


def dead_local_workers() -> list[str]:
    """Workers of this host holding runs whose process no longer exists."""
    host = socket.gethostname()
    dead = []
    for recorded in (
        PipelineRun.objects.filter(status=Status.RUNNING, worker_id__startswith=f"{host}:")
        .values_list("worker_id", flat=True)
        .distinct()
    ):
        if not process_alive(int(recorded.split(":")[1])):
            dead.append(recorded)
    return dead
